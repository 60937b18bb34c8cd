"""`kd report` in headless Chromium: the reports of a teacher / student / distilled classifier set
(plus an incomplete run) and of a detector load with no console errors, every chart has data
points, the confusion heatmap and the sample predictions are there, the incomplete run is reported
as such. Screenshots are kept in ARTIFACT_DIR. (The dashboard of `kd serve --runs`:
dashboard_test.py.)
Usage: report_test.py KD_BINARY WORK_DIR ARTIFACT_DIR"""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from browser import Browser  # noqa: E402
from serve_common import Checks, make_distilled_runs, make_runs, run  # noqa: E402

KD, WORK, ARTIFACTS = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(ARTIFACTS, exist_ok=True)
c = Checks()
cls_run, det_run, _ = make_runs(KD, os.path.join(WORK, "runs"))  # made by the ctest fixture
student, distilled = make_distilled_runs(KD, os.path.join(WORK, "runs"), cls_run)
# An interrupted run: its checkpoints and metrics, no summary.json.
broken = os.path.join(WORK, "incomplete")
shutil.rmtree(broken, ignore_errors=True)
shutil.copytree(distilled, broken)
os.remove(os.path.join(broken, "summary.json"))


def open_report(browser, url, shot):
    browser.goto(url)
    state = browser.wait_for("document.body && document.body.dataset.state === 'ready' && 'ready'")
    charts = browser.eval("window.kdCharts.map(ch => [ch.kdId, ch.data.datasets.reduce((n, d) => n + d.data.length, 0)])")
    browser.screenshot(os.path.join(ARTIFACTS, shot))
    c.ok(f"{shot}: screenshot kept", os.path.getsize(os.path.join(ARTIFACTS, shot)) > 10000)
    return state, dict(charts)


browser = Browser(1280, 2000)
try:
    out = os.path.join(WORK, "report-classify.html")
    run([KD, "report", cls_run, student, distilled, broken, "-o", out])
    html = open(out).read()
    c.ok("the report is one file with Chart.js inside (no external scripts or styles)",
         "Chart.js v3" in html and "<script src" not in html and "<link" not in html)
    state, charts = open_report(browser, "file://" + out, "report-classify.png")
    c.ok("classifier report loads", state == "ready")
    want = {"loss", "score", "latency", "params", "per-class-0", "per-class-1", "per-class-2"}
    c.ok(f"every chart has data points ({len(charts)} charts)", want <= set(charts) and all(n > 0 for n in charts.values()),
         charts)
    c.ok("learning curves overlay the 4 runs (2 epochs each; train and eval loss)", charts["loss"] == 4 * 2 * 2, charts["loss"])
    c.ok("trade-off: one point per complete run", charts["params"] == 3, charts["params"])
    colours = browser.eval("""(() => { const by = id => window.kdCharts.find(ch => ch.kdId === id).data.datasets;
      const curve = Object.fromEntries(by('score').map(d => [d.label, d.borderColor]));
      return by('params').map(d => [d.label.replace(/ \\(.*\\)$/, ''), d.backgroundColor, curve[d.label.replace(/ \\(.*\\)$/, '')]]); })()""")
    c.ok("a run keeps one colour: trade-off point = its learning curve, one legend entry per run",
         len(colours) == 3 and all(a == b for _, a, b in colours) and len({a for _, a, _ in colours}) == 3, colours)
    distinct = browser.eval("new Set([...Array(40).keys()].map(runColor)).size")
    c.ok("40 runs (a method sweep) get 40 different colours", distinct == 40, distinct)
    roles = browser.eval("[...document.querySelectorAll('#runs .role')].map(e => e.textContent).join()")
    c.ok("roles: teacher, student, distilled (and the incomplete distilled run)", roles == "teacher,student,distilled,distilled", roles)
    badges = browser.eval("""(() => { const norm = c => { const d = document.createElement('div'); d.style.color = c;
        document.body.append(d); const v = getComputedStyle(d).color; d.remove(); return v; };
      return [...document.querySelectorAll('#runs .role')].map((e, i) => [getComputedStyle(e).backgroundColor, norm(runColor(i))]); })()""")
    c.ok("each role badge has its run's colour (the colour of its curves and points)",
         len(badges) == 4 and all(a == b for a, b in badges), badges)
    fits = browser.eval("[...document.querySelectorAll('[data-heatmap]')].map(e => [e.scrollWidth, e.clientWidth])")
    c.ok("each 10-class confusion matrix fits its card in a 1,280 px window (no scrolling)",
         len(fits) == 3 and all(w <= cw for w, cw in fits), fits)
    c.ok("the share of the gap closed is stated", "gap closed by distillation: distilled" in browser.eval("document.getElementById('gap').textContent"))
    cells = browser.eval("document.querySelectorAll('[data-heatmap] td').length")
    c.ok("confusion heatmaps: 3 x 10 x 10 cells", cells == 300, cells)
    warn = browser.eval("document.getElementById('warnings').textContent")
    c.ok("the incomplete run is reported as incomplete", "incomplete: no summary.json" in warn, warn)
    c.ok("configs are collapsible", browser.eval("document.querySelectorAll('details pre').length") == 4)

    out = os.path.join(WORK, "report-detect.html")
    run([KD, "report", det_run, "-o", out, "--samples", "6", "--score", "0.01"])
    state, charts = open_report(browser, "file://" + out, "report-detect.png")
    c.ok("detector report loads, PR curves have points", state == "ready" and charts.get("pr-0", 0) > 0, charts)
    c.ok("6 sample predictions with boxes", browser.eval("document.querySelectorAll('[data-samples] img').length") == 6)
    c.ok("no console errors in the reports", not browser.errors, browser.errors)

    r = subprocess.run([KD, "report", os.path.join(WORK, "nowhere"), "-o", os.path.join(WORK, "x.html")],
                       capture_output=True, text=True)
    c.ok("a missing run: exit 1, one line", r.returncode == 1 and r.stderr.strip().count("\n") == 0 and
         "no such run directory" in r.stderr, r.stderr)

finally:
    browser.close()
c.done()
