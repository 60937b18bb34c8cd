#!/usr/bin/env bash
# The two-dataset merge table of docs/results/modes.md: every run of experiments/merge-two-datasets.yaml
# scored by `kd eval` on the pooled test set (10,000 clothes + 2,000 digits) and on each dataset's
# own test set (the 20-class students' classes matched by name), mean ± std over the seeds; the
# merged students as a share of the all-labels student20, per seed.
# Usage: scripts/merge-table.sh [path/to/kd [RUNS_DIR]]   (after `kd run experiments/merge-two-datasets.yaml`)
set -euo pipefail
KD=${1:-build/kd} R=${2:-runs/merge2}
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for run in "$R"/*-s[0-9]; do
  [ -f "$run/summary.json" ] || continue
  for data in pooled fashion-mnist data/mnist; do
    case $data in
      pooled) args=() ;;
      *) args=(--data "$data") ;;
    esac
    # A teacher knows one dataset's classes only: it is scored on that dataset alone.
    if [ "$data" != pooled ] || [[ $(basename "$run") != teacher-* ]]; then
      if "$KD" eval "$run" "${args[@]}" --json >"$OUT.json" 2>/dev/null; then
        /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], d['metrics']['top1'])" \
          "$OUT.json" "$run" "$data" >>"$OUT"
      fi
    fi
  done
done
rm -f "$OUT.json"
/usr/bin/python3 - "$OUT" <<'PY'
import collections, re, statistics as st, sys
rows = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    run, data, top1 = line.split()
    name, seed = re.match(r".*/(.+)-s(\d+)$", run).groups()
    rows[name].setdefault(data, {})[int(seed)] = 100 * float(top1)
def cell(v):
    if not v: return "-"
    x = list(v.values())
    return f"{st.mean(x):.2f} ± {st.stdev(x):.2f}" if len(x) > 1 else f"{x[0]:.2f}"
print("| run | pooled test (12,000) | Fashion-MNIST test (10,000) | digits test (2,000) | seeds |")
print("|---|---|---|---|---|")
for name in rows:
    d = rows[name]
    seeds = max(len(v) for v in d.values())
    print(f"| {name} | {cell(d.get('pooled'))} | {cell(d.get('fashion-mnist'))} | {cell(d.get('data/mnist'))} | {seeds} |")
base = rows.get("student20", {}).get("pooled", {})
for name in rows:
    if name.startswith("merged") and base:
        got = rows[name].get("pooled", {})
        share = [100 * got[s] / base[s] for s in got if s in base]
        if share:
            print(f"{name}: {st.mean(share):.1f} % of student20 on the pooled test "
                  f"(per seed {' / '.join(f'{x:.1f}' for x in share)})")
PY
