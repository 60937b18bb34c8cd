"""The runs dashboard at scale: a folder of N runs (default 1,020: 10 experiments x 34 groups x 3
seeds, each a copy of a real run's config.yaml, summary.json and metrics.jsonl with its own name,
seed and score; one run in training) served by `kd serve --runs`, and measured as a user meets it:
the index request cold (every row read) and warm (from the row cache), a refresh while nothing
changed (304), a refresh after one run's epoch (one row read again, the groups pooled again), the
page in headless Chromium until its table is drawn, a table redraw, and how long a new epoch of
the live run takes to reach the open page (it polls every 3 s).
Usage: /usr/bin/python3 bench/dashboard.py KD RUN [N]   (RUN: any complete classifier run)"""
import fcntl
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from browser import Browser  # noqa: E402
from serve_common import Server  # noqa: E402

KD, SRC = sys.argv[1], sys.argv[2]
N = int(sys.argv[3]) if len(sys.argv) > 3 else 1020
work = tempfile.mkdtemp(prefix="kd-dashboard-bench.")
root = os.path.join(work, "runs")
cfg0 = open(os.path.join(SRC, "config.yaml")).read()
summary0 = json.load(open(os.path.join(SRC, "summary.json")))
metrics0 = open(os.path.join(SRC, "metrics.jsonl")).read().splitlines()
modes = ["train", "offline", "semi", "self"]
made = 0
for e in range(10):
    for g in range(34):
        for seed in range(3):
            if made >= N:
                break
            name = f"g{g:02d}"
            d = os.path.join(root, f"exp{e}", f"{name}-s{seed}")
            os.makedirs(d)
            cfg = re.sub(r"(?m)^name: .*$", f"name: {name}", cfg0)
            cfg = re.sub(r"(?m)^mode: .*$", f"mode: {modes[g % 4]}", cfg)
            open(os.path.join(d, "config.yaml"), "w").write(re.sub(r"(?m)^  seed: \d+$", f"  seed: {seed}", cfg))
            s = dict(summary0, name=name, seed=seed, mode=modes[g % 4], teacher_name="g00" if g % 4 else "")
            s["test"] = dict(summary0["test"], top1=0.8 + 0.004 * g + 0.001 * seed)
            json.dump(s, open(os.path.join(d, "summary.json"), "w"))
            open(os.path.join(d, "metrics.jsonl"), "w").write("\n".join(metrics0) + "\n")
            made += 1
live = os.path.join(root, "exp0", "g00-s0")
os.remove(os.path.join(live, "summary.json"))
open(os.path.join(live, "metrics.jsonl"), "w").write("\n".join(metrics0[:1]) + "\n")
lock = open(os.path.join(live, ".lock"), "w")
fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

server = Server(KD, ["--runs", root], os.path.join(work, "server.log"))
ms = lambda t: 1000 * t  # noqa: E731


def timed(fn, n=1):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out), r


try:
    url = server.url + "/runs/index.json"
    cold, r = timed(lambda: requests.get(url))
    size = len(r.content)
    etag = r.headers["ETag"]
    warm, _ = timed(lambda: requests.get(url), 10)
    unchanged, r304 = timed(lambda: requests.get(url, headers={"If-None-Match": etag}), 20)
    assert r304.status_code == 304, r304.status_code

    def one_epoch_later():
        with open(os.path.join(live, "metrics.jsonl"), "a") as f:
            f.write(metrics0[1] + "\n")
        return requests.get(url, headers={"If-None-Match": etag})
    changed, r2 = timed(one_epoch_later)
    assert r2.status_code == 200

    b = Browser(1280, 900)
    try:
        t = time.perf_counter()
        b.goto(server.url + "/runs")
        b.wait_for("document.body && document.body.dataset.state === 'ready'", 60)
        page = time.perf_counter() - t
        groups = b.eval("document.querySelectorAll('tr.group').length")
        redraw = b.eval("(() => { const t = performance.now(); renderTable(); return performance.now() - t; })()")
        b.eval("document.querySelectorAll('tr.group .toggle').forEach((t, i) => i < 40 && t.click())")
        rows = b.eval("document.querySelectorAll('tbody tr').length")
        redraw_open = b.eval("(() => { const t = performance.now(); renderTable(); return performance.now() - t; })()")
        with open(os.path.join(live, "metrics.jsonl"), "a") as f:
            f.write(metrics0[2] + "\n")
        t = time.perf_counter()
        b.wait_for("document.querySelector('tr.group[data-group=\"exp0/g00\"]').textContent.includes('epoch 3/')", 30)
        seen = time.perf_counter() - t
        errors = b.errors
    finally:
        b.close()
    print(f"runs dashboard, {made} runs ({groups} groups, 1 training), index.json {size / 1024:.0f} KiB")
    print(f"  index.json cold (every row read):        {ms(cold):7.1f} ms")
    print(f"  index.json warm (rows cached):           {ms(warm):7.1f} ms")
    print(f"  refresh, nothing changed (304):          {ms(unchanged):7.1f} ms")
    print(f"  refresh after one run's epoch (200):     {ms(changed):7.1f} ms")
    print(f"  page load in Chromium until drawn:       {ms(page):7.1f} ms")
    print(f"  table redraw, groups closed / 40 open:   {redraw:7.1f} / {redraw_open:.1f} ms ({rows} rows)")
    print(f"  a new epoch reaches the open page after: {ms(seen):7.1f} ms (3 s polling)")
    if errors:
        print(f"  console errors: {errors}")
finally:
    server.stop()
    shutil.rmtree(work, ignore_errors=True)
