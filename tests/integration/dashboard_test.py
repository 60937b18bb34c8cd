"""The runs dashboard of `kd serve --runs DIR` in headless Chromium, used as a person would: runs
grouped by experiment and by name across seeds (mean ± std and gap closed, as `kd compare` has
them), expandable to the seeds, sorted by mouse and by keyboard, filtered; the charts hold one
point per group and the ticked runs' learning curves; a run being trained shows its epoch and ETA
and updates without a page reload when its metrics.jsonl grows; a failed run shows error.txt's
reason; the page fits a 1280-pixel window and a phone's; paths are relative to DIR; the index is
answered 304 while nothing changed; paths outside DIR are refused. Screenshots: ARTIFACT_DIR.
Usage: dashboard_test.py KD_BINARY WORK_DIR ARTIFACT_DIR"""
import fcntl
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
from browser import Browser  # noqa: E402
from serve_common import Checks, Server, make_distilled_runs, make_runs  # noqa: E402

KD, WORK, ARTIFACTS = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(ARTIFACTS, exist_ok=True)
c = Checks()
cls_run, det_run, _ = make_runs(KD, os.path.join(WORK, "runs"))  # made by the ctest fixture
student, distilled = make_distilled_runs(KD, os.path.join(WORK, "runs"), cls_run)

# DIR: two experiments and a top-level run. exp/ holds a teacher, a student and a distilled
# student over two seeds each (copies of the small real runs with their seeds and scores set, so
# the pooled figures are known), a run being trained and a failed one.
DASH = os.path.join(WORK, "dash")
shutil.rmtree(DASH, ignore_errors=True)


def copy_run(src, rel, name, seed, score=None, teacher=None, summary=True):
    dst = os.path.join(DASH, rel)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", ".lock"))
    cfg_path = os.path.join(dst, "config.yaml")
    cfg = open(cfg_path).read()
    cfg = re.sub(r"(?m)^name: .*$", f"name: {name}", cfg)
    cfg = re.sub(r"(?m)^  seed: \d+$", f"  seed: {seed}", cfg)
    open(cfg_path, "w").write(cfg)
    s_path = os.path.join(dst, "summary.json")
    if not summary:
        os.remove(s_path)
        return dst
    s = json.load(open(s_path))
    s.update(name=name, seed=seed)
    if score is not None:
        s["test"]["top1"] = score
    if teacher is not None:
        s["teacher_name"] = teacher
    json.dump(s, open(s_path, "w"))
    return dst


scores = {"teacher": (0.80, 0.82), "student": (0.70, 0.74), "distilled": (0.77, 0.80)}
for seed in (0, 1):
    copy_run(cls_run, f"exp/teacher-s{seed}", "teacher", seed, scores["teacher"][seed])
    copy_run(student, f"exp/student-s{seed}", "student", seed, scores["student"][seed])
    copy_run(distilled, f"exp/distilled-s{seed}", "distilled", seed, scores["distilled"][seed], "teacher")
copy_run(det_run, "det/d0-s0", "d0", 0)
served = copy_run(cls_run, "cls", "cls", 0)
live = copy_run(distilled, "exp/live-s0", "live", 0, summary=False)
lines = open(os.path.join(live, "metrics.jsonl")).read().splitlines()
open(os.path.join(live, "metrics.jsonl"), "w").write(lines[0] + "\n")
failed = copy_run(distilled, "exp/broken-s0", "broken", 0, summary=False)
reason = "epoch 2 batch 5: loss is NaN (learning rate 10); lower --lr or raise --warmup"
open(os.path.join(failed, "error.txt"), "w").write(reason + "\n")
# The live run: its lock held as `kd train` holds it.
lock = open(os.path.join(live, ".lock"), "w")
lock.write(str(os.getpid()))
lock.flush()
fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

mean_std = lambda v: f"{100 * statistics.mean(v):.2f} ± {100 * statistics.stdev(v):.2f}"  # noqa: E731
gaps = [(d - s) / (t - s) for d, s, t in zip(scores["distilled"], scores["student"], scores["teacher"])]
want_gap = f"{100 * statistics.mean(gaps):.1f} ± {100 * statistics.stdev(gaps):.1f}"
compare = subprocess.run([KD, "compare", *[os.path.join(DASH, f"exp/{n}-s{s}") for n in scores for s in (0, 1)]],
                         capture_output=True, text=True).stdout
c.ok(f"kd compare closes {want_gap} % of the gap on the same runs", f"closes {want_gap} %" in compare, compare)

server = Server(KD, [f"cls={served}", "--runs", DASH], os.path.join(WORK, "server-dashboard.log"))
browser = Browser(1280, 1000)
try:
    url = server.url + "/runs"
    r = requests.get(server.url + "/runs/index.json")
    etag = r.headers.get("ETag")
    c.ok("the index is JSON with an ETag", r.status_code == 200 and etag and r.json()["root"] == "dash", r.headers)
    c.ok("no absolute path in the index (paths relative to DIR)", WORK not in r.text)
    again = requests.get(server.url + "/runs/index.json", headers={"If-None-Match": etag})
    c.ok("an unchanged folder is answered 304", again.status_code == 304 and not again.content, again.status_code)
    index = r.json()
    states = {x["path"]: x["state"] for x in index["runs"]}
    c.ok("states: training (lock held), failed (error.txt), complete",
         states["exp/live-s0"] == "training" and states["exp/broken-s0"] == "failed" and states["cls"] == "complete", states)

    browser.goto(url)
    browser.wait_for("document.body && document.body.dataset.state === 'ready'")
    browser.eval("window.kdMarker = 1")
    groups = browser.eval("[...document.querySelectorAll('tr.group')].map(r => r.dataset.group)")
    c.ok("groups by experiment and name", sorted(groups) == ["cls", "det/d0", "exp/broken", "exp/distilled", "exp/live",
                                                               "exp/student", "exp/teacher"], groups)
    c.ok("no absolute path on the page", WORK not in browser.eval("document.body.innerText"))
    cell = lambda group, col: browser.eval(  # noqa: E731
        f"document.querySelector('tr.group[data-group=\"{group}\"]').children[{col}].textContent")
    c.ok("a group pools its seeds: mean ± std", cell("exp/student", 4) == mean_std(scores["student"]), cell("exp/student", 4))
    c.ok("the gap closed is kd compare's", cell("exp/distilled", 5) == want_gap, cell("exp/distilled", 5))
    c.ok("the live run shows its epoch and ETA", re.search(r"1 training \(epoch 1/2, ETA \d+ s\)", cell("exp/live", 8)),
         cell("exp/live", 8))
    c.ok("the failed run says so", "1 failed" in cell("exp/broken", 8), cell("exp/broken", 8))

    browser.eval("document.querySelector('tr.group[data-group=\"exp/broken\"] .toggle').click()")
    why = browser.eval("document.querySelector('tr.seed[data-run=\"exp/broken-s0\"]').textContent")
    c.ok("its seed row shows error.txt's reason", reason in why, why)
    toggle = "tr.group[data-group=\"exp/student\"] .toggle"
    browser.eval(f"document.querySelector('{toggle}').click()")
    seeds = browser.eval("[...document.querySelectorAll('tr.seed')].map(r => r.dataset.run)")
    c.ok("expanding a group lists its seeds", sorted(seeds) == ["exp/broken-s0", "exp/student-s0", "exp/student-s1"], seeds)
    c.ok("the toggle says it is open", browser.eval(f"document.querySelector('{toggle}').getAttribute('aria-expanded')") == "true")
    order = lambda: browser.eval(  # noqa: E731
        "[...document.querySelectorAll('tbody[data-experiment=\"exp\"] tr.group')].map(r => r.dataset.group)")
    browser.eval("document.querySelector('button[data-sort=\"score\"]').click()")
    c.ok("sorted by score, best first; runs without a score last",
         order()[:3] == ["exp/teacher", "exp/distilled", "exp/student"], order())
    # Keyboard: Tab-reachable buttons; Enter on the focused "Run" header sorts by name.
    browser.eval("document.querySelector('button[data-sort=\"name\"]').focus()")
    browser.press("Enter", "Enter", 13)
    c.ok("Enter on a focused header sorts (by name)", order() == sorted(order()) and len(order()) == 5, order())
    c.ok("the sort is announced (aria-sort)",
         browser.eval("document.querySelector('button[data-sort=\"name\"]').getAttribute('aria-sort')") == "ascending")
    c.ok("every control is a button, link or input with a name",
         browser.eval("[...document.querySelectorAll('tr.group .toggle')].every(b => b.tagName === 'BUTTON' && b.getAttribute('aria-label'))"))

    points = lambda i: browser.eval(f"window.kdCharts[{i}].data.datasets.reduce((n, d) => n + d.data.length, 0)")  # noqa: E731
    with_latency = len([g for g in index["groups"] if g["latency_ms"]["n"]])
    c.ok(f"score-latency chart: one point per group with a latency ({with_latency})", points(0) == with_latency, points(0))
    c.ok("score-params chart: one point per group with a score (5)", points(1) == 5, points(1))
    roles = browser.eval("Object.fromEntries(window.kdCharts[1].data.datasets.flatMap(d => d.data.map(p => "
                         "[(d.label === '(top level)' ? '' : d.label + '/') + p.label, p.role])))")
    c.ok("each point is shaped by its group's role: teacher, student, distilled",
         roles.get("exp/teacher") == "teacher" and roles.get("exp/student") == "student" and
         roles.get("exp/distilled") == "distilled", roles)
    shapes = browser.eval("window.kdCharts[1].getDatasetMeta(window.kdCharts[1].data.datasets.findIndex(d => d.label === 'exp'))"
                          ".data.map(e => e.options.pointStyle).sort().join()")
    c.ok("... drawn as triangle, circle and diamond", shapes == "circle,rectRot,triangle", shapes)

    browser.eval("document.querySelector('tr.group[data-group=\"exp/live\"] .toggle').click()")
    browser.eval("document.querySelector('tr.seed[data-run=\"exp/live-s0\"] input').click()")
    browser.wait_for("window.kdCharts[2].data.datasets.length === 1")
    c.ok("ticking a run overlays its learning curve", points(2) == 1, points(2))
    browser.eval("document.querySelector('tr.seed[data-run=\"exp/student-s0\"] input').click()")
    browser.wait_for("window.kdCharts[2].data.datasets.length === 2")

    # The live run finishes an epoch: its metrics grow; the page follows without a reload.
    refreshes = browser.eval("window.kdState.refreshes")
    with open(os.path.join(live, "metrics.jsonl"), "a") as f:
        f.write(lines[1] + "\n")
    t0 = time.time()
    browser.wait_for("document.querySelector('tr.group[data-group=\"exp/live\"]').textContent.includes('epoch 2/2')", 20)
    seconds = time.time() - t0
    c.ok(f"the live run's new epoch shows without a reload ({seconds:.1f} s)",
         browser.eval("window.kdMarker === 1 && window.kdState.refreshes > " + str(refreshes)))
    browser.wait_for("window.kdCharts[2].data.datasets.find(d => d.label === 'exp/live-s0').data.length === 2", 10)
    c.ok("and its learning curve grows", True)
    browser.screenshot(os.path.join(ARTIFACTS, "dashboard.png"))
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
    browser.wait_for("document.querySelector('tr.seed[data-run=\"exp/live-s0\"]').textContent.includes('incomplete')", 20)
    c.ok("a run whose process stopped is shown incomplete", True)

    fits = browser.eval("""(() => { const w = window.innerWidth;
      return document.documentElement.scrollWidth <= w &&
        [...document.querySelectorAll('tr.group a, tr.seed a')].every(a => a.getBoundingClientRect().right <= w); })()""")
    c.ok("1280-pixel window: nothing wider than the window, every link inside it", fits)

    browser.eval("{ const f = document.getElementById('filter'); f.value = 'offline'; f.dispatchEvent(new Event('input')); }")
    shown = browser.eval("[...document.querySelectorAll('tr.group')].map(r => r.dataset.group)")
    c.ok("the filter keeps the matching groups (mode offline)", sorted(shown) == ["exp/broken", "exp/distilled", "exp/live"], shown)
    browser.eval("{ const f = document.getElementById('filter'); f.value = 'effdet'; f.dispatchEvent(new Event('input')); }")
    shown = browser.eval("[...document.querySelectorAll('tr.group')].map(r => r.dataset.group)")
    c.ok("... and by architecture", shown == ["det/d0"], shown)
    browser.eval("{ const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); }")

    browser.eval("document.querySelector('tr.group[data-group=\"cls\"] .toggle').click()")
    c.ok("the served run links to the prediction page",
         browser.eval("!!document.querySelector('tr.seed[data-run=\"cls\"] a[href=\"/?model=cls\"]')"))
    href = browser.eval("document.querySelector('tr.group[data-group=\"exp/student\"] a').getAttribute('href')")
    browser.goto(server.url + href)
    browser.wait_for("document.body && document.body.dataset.state === 'ready'")
    n = browser.eval("window.kdCharts.find(ch => ch.kdId === 'params').data.datasets.length")
    c.ok("a group's report link reports on its seeds", n == 2, n)
    c.ok("no console errors", not browser.errors, browser.errors)
finally:
    browser.close()

phone = Browser(500, 900)
try:
    phone.viewport(390, 844, mobile=True)
    phone.goto(server.url + "/runs")
    phone.wait_for("document.body && document.body.dataset.state === 'ready'")
    c.ok("a phone-width window: the page does not scroll sideways",
         phone.eval("document.documentElement.scrollWidth <= window.innerWidth"),
         phone.eval("[document.documentElement.scrollWidth, window.innerWidth]"))
    c.ok("... and the runs come before the charts",
         phone.eval("document.querySelector('.table-wrap').getBoundingClientRect().top < document.querySelector('.charts').getBoundingClientRect().top"))
    phone.screenshot(os.path.join(ARTIFACTS, "dashboard-phone.png"))
    c.ok("no console errors on the phone", not phone.errors, phone.errors)
finally:
    phone.close()

try:
    for bad in ("/runs/report?runs=../runs/cls", "/runs/curves?runs=../runs/cls", "/runs/curves?runs=exp/nope"):
        c.ok(f"{bad}: 404", requests.get(server.url + bad).status_code == 404)
finally:
    server.stop()
c.done()
