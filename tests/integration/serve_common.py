"""Helpers shared by the `kd serve` integration tests: small real runs to serve, test images,
and a server process started on a free port and stopped with SIGTERM."""
import atexit
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image

FMNIST = "/usr/share/datasets/fashion-mnist"


class Checks:
    """Counts failures and prints one line per check, like the shell integration tests."""

    def __init__(self):
        self.fails = 0

    def ok(self, what, cond, detail=""):
        print(("ok   " if cond else "FAIL ") + what + ("" if cond or not detail else f" ({detail})"), flush=True)
        if not cond:
            self.fails += 1
        return cond

    def done(self):
        print(f"{self.fails} failed")
        sys.exit(1 if self.fails else 0)


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


def make_runs(kd, work):
    """A Fashion-MNIST classifier and a small detector, trained for a moment (seconds)."""
    os.makedirs(work, exist_ok=True)
    cls, det = os.path.join(work, "cls"), os.path.join(work, "det0")
    if not os.path.exists(os.path.join(cls, "summary.json")):
        run([kd, "train", "--arch", "fmnist-student", "--limit", "3000", "--epochs", "2", "--warmup", "0",
             "--lr", "0.1", "--threads", "2", "--no-latency", "--out", cls])
    data = os.path.join(work, "det")
    if not os.path.exists(os.path.join(data, "train.json")):
        run([kd, "data", "make-detection", "--out", data, "--images", "120", "--test-images", "24", "--canvas", "64",
             "--min-size", "14", "--max-size", "36", "--seed", "1"])
    if not os.path.exists(os.path.join(det, "summary.json")):
        run([kd, "train", "--arch", "effdet-d0", "--data", data, "--size", "64", "--epochs", "1", "--batch-size", "16",
             "--threads", "2", "--no-latency", "--out", det])
    return cls, det, data


def make_distilled_runs(kd, work, teacher):
    """A narrow student trained alone and one distilled from `teacher`, 2 epochs each (seconds)."""
    env = dict(os.environ, KD_CACHE_DIR=os.path.join(work, "..", "cache"))
    common = ["--limit", "3000", "--epochs", "2", "--warmup", "0", "--lr", "0.1", "--threads", "2"]
    student, distilled = os.path.join(work, "student"), os.path.join(work, "distilled")
    if not os.path.exists(os.path.join(student, "summary.json")):
        run([kd, "train", "--arch", "fmnist-student", "--arch-opt", "width=4", *common, "--out", student], env=env)
    if not os.path.exists(os.path.join(distilled, "summary.json")):
        run([kd, "distill", "--teacher", teacher, "--student", "fmnist-student", "--arch-opt", "width=4", *common,
             "--out", distilled], env=env)
    return student, distilled


def fmnist_images(n):
    """The first n Fashion-MNIST test images (uint8 [n, 28, 28]) and labels."""
    with gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 28, 28)[:n]
    with gzip.open(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read()[8:], dtype=np.uint8)[:n]
    return x, y


def write_png(array, path):
    Image.fromarray(array).save(path)
    return path


class Server:
    """`kd serve ... --port 0`; the port comes from the JSON line the server prints."""

    def __init__(self, kd, args, log):
        self.log = open(log, "w")
        self.proc = subprocess.Popen([kd, "serve", *args, "--port", "0"], stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            raise RuntimeError(f"kd serve exited ({self.proc.returncode}); see {log}")
        # A test that dies half-way must not leave its server running.
        atexit.register(lambda p=self.proc: p.poll() is None and p.kill())
        self.info = json.loads(line)  # {"listening": URL, "models": [...], "grpc": HOST:PORT}
        self.url = self.info["listening"]

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def stop(self, timeout=10):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        finally:
            self.log.close()


if __name__ == "__main__":  # ctest fixture: fresh runs for the serving tests
    import shutil

    shutil.rmtree(sys.argv[2], ignore_errors=True)
    make_runs(sys.argv[1], sys.argv[2])
