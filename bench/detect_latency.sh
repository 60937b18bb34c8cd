#!/usr/bin/env bash
# Detector latency, measured again in a quiet process per run (the summaries' numbers are taken
# at the end of training, while anything else on the machine competes): batch-1 median and p95
# of the network's forward, and batch-256 throughput, pooled by run name (mean ± std over seeds
# and rounds). The runs are measured in turn, ROUNDS times over (default 3): measured one group
# after the other, a slow spell of this shared host lands on one group and reads as a difference
# between models (it did: a "0.9 ms slower" distilled d0 that alternating runs do not show).
# Usage: [ROUNDS=3] bench/detect_latency.sh path/to/kd RUN...
set -euo pipefail
KD=$1
shift
for _ in $(seq "${ROUNDS:-3}"); do
  for run in "$@"; do
    "$KD" eval "$run" --latency --json --threads 2 2>/dev/null |
      /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); l=d['latency']; print(sys.argv[1], l['batch1_median_ms'], l['batch1_p95_ms'], l['throughput_per_s'])" "$run"
  done
done | /usr/bin/python3 -c '
import sys, re, statistics as st
rows = {}
for line in sys.stdin:
    run, med, p95, thr = line.split()
    name = re.sub(r"-s\d+$", "", run.rstrip("/").split("/")[-1])
    rows.setdefault(name, []).append((float(med), float(p95), float(thr)))
def f(v, spec):
    return spec.format(st.mean(v)) + (" ± " + spec.format(st.stdev(v)) if len(v) > 1 else "")
print("| run | latency b1 median (ms) | p95 (ms) | throughput b256 (img/s) | runs |")
print("|---|---|---|---|---|")
for name, v in rows.items():
    med, p95, thr = f([x[0] for x in v], "{:.2f}"), f([x[1] for x in v], "{:.2f}"), f([x[2] for x in v], "{:.0f}")
    print("| %s | %s | %s | %s | %d |" % (name, med, p95, thr, len(v)))
'
