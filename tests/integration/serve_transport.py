"""`kd serve`'s HTTP transport under a hostile network and odd but legal clients, with raw
sockets: slow senders, idle keep-alive crowds, body limits whatever the framing (chunked, gzip,
none), header limits, memory given back, non-finite numbers, RFC 9112 framing (ambiguous requests
get 400 and a closed connection), a body-less POST, curl's own uploads, pipelining, an API key
with a percent sign, and a second server on a busy port. Each check is a finding of issue 17 with
the answer it gets now.
Usage: serve_transport.py KD_BINARY WORK_DIR"""
import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import requests

sys.path.insert(0, os.path.dirname(__file__))
from serve_common import Checks, Server, fmnist_images, make_runs  # noqa: E402

KD, WORK = sys.argv[1], sys.argv[2]
c = Checks()
cls_run, _, _ = make_runs(KD, os.path.join(WORK, "runs"))  # made by the ctest fixture
images, _ = fmnist_images(4)
KEY = "k%41y"  # a literal percent sign: header values are not percent-decoded

server = Server(KD, [f"m={cls_run}", "--api-key", KEY, "--max-body-mb", "1", "--header-timeout", "2",
                     "--idle-timeout", "30", "--http-threads", "8"],
                os.path.join(WORK, "transport.log"))
HOST, PORT = server.url.split("//")[1].split(":")
PORT = int(PORT)
AUTH = f"Authorization: Bearer {KEY}\r\n"


class Conn:
    """A client socket that keeps what it received past one response (pipelined answers)."""

    def __init__(self, timeout=10):
        self.sock = socket.create_connection((HOST, PORT), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def sendall(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()

    def _more(self):
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def response(self, to_head=False):
        """One HTTP response: (status, headers dict, body bytes); (None, {}, b"") on EOF. A
        response to HEAD has a Content-Length but no body."""
        try:
            while b"\r\n\r\n" not in self.buf:
                if not self._more():
                    return None, {}, b""
            top, rest = self.buf.split(b"\r\n\r\n", 1)
            lines = top.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
            n = 0 if to_head else int(headers.get("content-length", 0))
            self.buf = rest
            while len(self.buf) < n and self._more():
                pass
            body, self.buf = self.buf[:n], self.buf[n:]
            return status, headers, body
        except (ConnectionResetError, BrokenPipeError):
            return None, {}, b""

    def closed(self, wait=5):
        """True when the server closes the connection (EOF or reset) within `wait` seconds."""
        self.sock.settimeout(wait)
        try:
            while self._more():
                pass
            return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def connect(timeout=10):
    return Conn(timeout)


def read_response(s):
    return s.response()


def closed(s, wait=5):
    return s.closed(wait)


def exchange(raw, timeout=10):
    s = connect(timeout)
    s.sendall(raw)
    status, headers, body = read_response(s)
    return s, status, headers, body


def health_ok(timeout=1.0):
    try:
        return requests.get(server.url + "/v2/health/live", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def infer_json(x):
    return json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.flatten().tolist()}]}).encode()


X = (images[:1].astype(np.float32) / 255).reshape(1, 1, 28, 28)
INFER = infer_json(X)
GOOD = (f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\n"
        f"Content-Length: {len(INFER)}\r\n\r\n").encode() + INFER

# 1. Slow senders and idle crowds stall nobody; slow headers lose their connection.
stop = threading.Event()
slow = []
for _ in range(100):
    s = connect()
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
    slow.append(s)


def drip():
    while not stop.is_set():
        for s in slow:
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                pass
        time.sleep(0.5)


t = threading.Thread(target=drip)
t.start()
answered = sum(health_ok() for _ in range(7))
c.ok(f"100 slowloris sockets: health probes answered ({answered}/7)", answered == 7)
time.sleep(2.5)  # past --header-timeout 2
stop.set()
t.join()
c.ok("a connection that sends headers slower than --header-timeout is closed",
     all(closed(s, 3) for s in slow[:10]))
for s in slow:
    s.close()
idle = []
for _ in range(64):
    s = connect()
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    read_response(s)
    idle.append(s)  # kept open, idle, keep-alive
t0 = time.time()
ok = health_ok(2)
c.ok(f"64 idle keep-alive connections: the 65th client is answered at once ({time.time() - t0:.2f} s)",
     ok and time.time() - t0 < 1)
for s in idle:
    s.close()

# 2. Body limits hold whatever the framing (--max-body-mb 1).
s = connect()
s.sendall(f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n{AUTH}Transfer-Encoding: chunked\r\n\r\n".encode())
status = None
try:
    for _ in range(24):  # 24 chunks of 100 KiB
        s.sendall(b"19000\r\n" + b"1" * 0x19000 + b"\r\n")
except OSError:
    pass
status, _, body = read_response(s)
c.ok("chunked body past the limit: 413", status == 413, status)
bomb = gzip.compress(b" " * (128 << 20))
s, status, _, body = exchange(f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Encoding: gzip\r\n"
                              f"Content-Length: {len(bomb)}\r\n\r\n".encode() + bomb)
c.ok(f"gzip body of {len(bomb) >> 10} KiB inflating to 128 MiB: 413", status == 413, status)
gz = gzip.compress(INFER)
s, status, _, body = exchange(f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Encoding: gzip\r\n"
                              f"Content-Length: {len(gz)}\r\n\r\n".encode() + gz)
c.ok("gzip body within the limit: inflated and answered 200", status == 200, status)
s, status, _, body = exchange(f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Encoding: br\r\n"
                              f"Content-Length: {len(INFER)}\r\n\r\n".encode() + INFER)
c.ok("unknown Content-Encoding: 415", status == 415, status)
# Neither Content-Length nor Transfer-Encoding: a request has no body (RFC 9112 6.3), so the bytes
# after the headers are not read to EOF as a body; they are a malformed next request.
s, status, _, body = exchange(f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode() + b"x" * 5000
                             + b"\r\n\r\n")
c.ok("body without framing: not read as a body (400 empty body)", status == 400 and b"empty body" in body, body[:200])
c.ok("... and the stray bytes are a malformed request: 400, closed",
     read_response(s)[0] == 400 and closed(s))

# 3. Header limits: bytes and count.
before = server.rss_kib()
s = connect()
try:
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Big: " + b"a" * (64 << 20) + b"\r\n\r\n")
except OSError:
    pass
status = read_response(s)[0]
c.ok("a 64 MiB header line: 431", status == 431, status)
c.ok(f"... costing no memory (RSS {before >> 10} -> {server.rss_kib() >> 10} MB)",
     server.rss_kib() - before < 20 << 10)
s = connect()
try:
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 4000) for i in range(20000)) + b"\r\n")
except OSError:
    pass
c.ok("20,000 header lines of 4 kB: 431", read_response(s)[0] == 431)
s, status, _, _ = exchange(b"GET /v2/health/live HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(150)) + b"\r\n")
c.ok("150 short headers (limit 100): 431", status == 431, status)

# 5. Numbers past FP32 and outputs that are not finite are errors, never null.
s, status, _, body = exchange((f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: "
                               f"{len(infer_json(X * 0 + 1e39))}\r\n\r\n").encode() + infer_json(X * 0 + 1e39))
c.ok("an FP32 input of 1e39: 400 naming FP32's range", status == 400 and b"FP32" in body, body[:200])
big = infer_json(np.full((1, 1, 28, 28), 3e38, dtype=np.float64))
s, status, _, body = exchange((f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: "
                               f"{len(big)}\r\n\r\n").encode() + big)
c.ok("all pixels 3e38: an error, not null logits", status == 400 and b"not finite" in body and b"null" not in body,
     (status, body[:200]))

# 6. RFC 9112 framing.
s = connect()
s.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: {len(GOOD)}\r\n\r\n".encode() + GOOD)
status, _, _ = read_response(s)
s.sock.settimeout(1)
try:
    s._more()
except socket.timeout:
    pass
extra = s.buf
c.ok("GET with a Content-Length body: the body is the GET's, not a second request", status == 200 and not extra,
     extra[:100])
s, status, _, _ = exchange(f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n{AUTH}Transfer-Encoding: chunked\r\n"
                           f"Content-Length: 5\r\n\r\n0\r\n\r\n".encode())
c.ok("Transfer-Encoding and Content-Length together: 400, closed", status == 400 and closed(s), status)
s, status, _, _ = exchange(f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n{AUTH}Transfer-Encoding: chunked\r\n\r\n"
                           "5\r\nhelloGET /v2 HTTP/1.1\r\n\r\n0\r\n\r\n".encode())
c.ok("chunk data without its CRLF: 400, closed", status == 400 and closed(s), status)
s, status, _, _ = exchange(f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n{AUTH}Transfer-Encoding: identity, "
                           f"chunked\r\n\r\n0\r\n\r\n".encode())
c.ok("Transfer-Encoding: identity, chunked: 501, closed", status == 501 and closed(s), status)
s, status, _, _ = exchange(f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: {len(INFER)}\r\n"
                           f"Content-Length: 3\r\n\r\n".encode() + INFER)
c.ok("two different Content-Lengths: 400, closed", status == 400 and closed(s), status)

# 7. A POST with no body is answered at once.
t0 = time.time()
s, status, _, body = exchange(f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
c.ok(f"POST without a body: 400 at once ({time.time() - t0:.2f} s)", status == 400 and time.time() - t0 < 1, status)

# 8. curl's own uploads: form-urlencoded type, Expect: 100-continue.
body_file = os.path.join(WORK, "body.json")
with open(body_file, "wb") as f:
    f.write(infer_json(np.repeat(X, 8, axis=0)))
t0 = time.time()
r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-H", f"Authorization: Bearer {KEY}", "-d", f"@{body_file}",
                    server.url + "/v2/models/m/infer"], capture_output=True, text=True, timeout=30)
code = r.stdout.rsplit("\n", 1)[-1]
c.ok(f"curl -d @body.json ({os.path.getsize(body_file) >> 10} KiB, form type): 200", code == "200", r.stdout[-200:])
r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", "-H", "Expect: 100-continue",
                    "-H", f"Authorization: Bearer {KEY}", "--data-binary", f"@{body_file}",
                    server.url + "/v2/models/m/infer"], capture_output=True, text=True, timeout=30)
code, took = r.stdout.split()
c.ok(f"Expect: 100-continue is answered, not waited out ({took} s)", code == "200" and float(took) < 0.9, r.stdout)

# 9. Pipelining: three requests in one write, three answers in order.
s = connect()
s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" + GOOD + b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
answers = [s.response()[::2] for _ in range(3)]
c.ok("3 pipelined requests: 3 answers in order",
     [a[0] for a in answers] == [200, 200, 200] and b"live" in answers[0][1] and b"outputs" in answers[1][1]
     and b"ready" in answers[2][1], [a[0] for a in answers])

# 10. An API key with a percent sign matches itself (and only itself).
r = requests.get(server.url + "/v2", headers={"Authorization": f"Bearer {KEY}"})
c.ok("API key 'k%41y' matches itself", r.status_code == 200, r.status_code)
r = requests.get(server.url + "/v2", headers={"Authorization": "Bearer kAy"})
c.ok("... and not its percent-decoded form", r.status_code == 401, r.status_code)

# HEAD and HTTP/1.0.
s = connect()
s.sendall(b"HEAD /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
status, headers, body = s.response(to_head=True)
c.ok("HEAD: 200 with the length and no body", status == 200 and int(headers["content-length"]) > 0 and body == b"")
s, status, _, _ = exchange(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
c.ok("HTTP/1.0 without keep-alive: answered, closed", status == 200 and closed(s))

# 4. Memory goes back: 96 requests with a 4 MiB id (under a 32 MiB limit).
server.stop()
server = Server(KD, [f"m={cls_run}", "--http-threads", "16"], os.path.join(WORK, "transport-mem.log"))
X1 = X.flatten().tolist()
big_id = json.dumps({"id": "x" * (4 << 20), "inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                                      "data": X1}]})
requests.post(server.url + "/v2/models/m/infer", data=INFER)
before = server.rss_kib()
sess = [requests.Session() for _ in range(16)]


def send(i):
    return sess[i % 16].post(server.url + "/v2/models/m/infer", data=big_id, timeout=60).status_code


import concurrent.futures as cf  # noqa: E402

with cf.ThreadPoolExecutor(16) as ex:
    codes = list(ex.map(send, range(96)))
time.sleep(0.5)
after = server.rss_kib()
c.ok(f"96 requests with a 4 MiB id: all 200, RSS {before >> 10} -> {after >> 10} MB (kept < 100 MB)",
     codes == [200] * 96 and after - before < 100 << 10, codes[:5])

# 11. A second server on the same port: one line, exit 1.
r = subprocess.run([KD, "serve", f"m={cls_run}", "--port", str(int(server.url.rsplit(":", 1)[1]))],
                   capture_output=True, text=True, timeout=60)
c.ok("kd serve on a busy port: exit 1, one line naming the port",
     r.returncode == 1 and "in use" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr[-300:])

c.ok("server exits 0 on SIGTERM", server.stop() == 0)
c.done()
