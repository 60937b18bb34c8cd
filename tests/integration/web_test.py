"""The prediction page of `kd serve` in headless Chromium, as a person uses it: it lists the
models, a PNG picked in the file input is sent to the server, the top classes (classifier) or
the boxes drawn on the image (detector) appear and agree with the API, with no console errors.
Screenshots are kept in ARTIFACT_DIR.
Usage: web_test.py KD_BINARY WORK_DIR ARTIFACT_DIR"""
import json
import os
import sys

import requests

sys.path.insert(0, os.path.dirname(__file__))
from browser import Browser  # noqa: E402
from serve_common import Checks, Server, fmnist_images, make_runs, write_png  # noqa: E402

KD, WORK, ARTIFACTS = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(ARTIFACTS, exist_ok=True)
c = Checks()
cls_run, det_run, det_data = make_runs(KD, os.path.join(WORK, "runs"))  # made by the ctest fixture
images, _ = fmnist_images(1)
png = write_png(images[0], os.path.join(WORK, "fm0.png"))
det_png = os.path.join(det_data, "images", "test_000001.png")
server = Server(KD, [cls_run, det_run], os.path.join(WORK, "server-web.log"))
browser = Browser()
try:
    browser.goto(server.url + "/")
    state = browser.wait_for("document.body && document.body.dataset.state")
    c.ok("page loads and lists the models", state == "ready" and
         browser.eval("[...document.querySelectorAll('#model option')].map(o => o.value).sort().join()") == "cls,det0")

    for model, image, shot in [("cls", png, "serve-classify.png"), ("det0", det_png, "serve-detect.png")]:
        # The detector here is trained for a moment: its scores are near the prior (~0.01), so the threshold is lowered to see boxes.
        query = "?score=0.01" if model == "det0" else ""
        api = requests.post(f"{server.url}/v2/models/{model}/image{query}", data=open(image, "rb").read()).json()
        browser.eval(f"document.getElementById('model').value = {json.dumps(model)}; showModelInfo();"
                     "document.getElementById('score').value = '0.01'; document.body.dataset.state = 'picked'")
        browser.set_file("#file", image)
        state = browser.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state")
        rows = browser.eval("[...document.querySelectorAll('#result tr.prediction')].map(r => r.cells[0].textContent)")
        status = browser.eval("document.getElementById('status').textContent")
        if model == "cls":
            want = [x["class"] for x in api["classes"]]
            c.ok(f"{model}: the page shows the API's top classes ({want[0]} first)", state == "done" and rows == want,
                 f"{state} {status} {rows}")
        else:
            want = [x["class"] for x in api["detections"]]
            c.ok(f"{model}: the page lists the API's {len(want)} boxes", state == "done" and rows == want and len(want) > 0,
                 f"{state} {status} {rows}")
        browser.screenshot(os.path.join(ARTIFACTS, shot))
        c.ok(f"{model}: screenshot kept", os.path.getsize(os.path.join(ARTIFACTS, shot)) > 1000)
    c.ok("no console errors", not browser.errors, browser.errors)
finally:
    browser.close()
    server.stop()
c.done()
