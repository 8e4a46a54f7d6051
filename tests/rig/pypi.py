#!/usr/bin/env python3
"""A PyPI-like package index on 127.0.0.1 for build tests and benchmarks: PEP 503 pages
(/simple/NAME/) over wheels it makes itself (pure-Python, each with a payload of the size asked),
files served with PyPI's long-lived Cache-Control, every file download reported.

    python3 tests/rig/pypi.py [--payload BYTES] [--rate BYTES_PER_S] NAME==VERSION ...

Prints `port N` once it listens, then `download FILE` for each wheel sent (HTTP 200), on
stdout, flushed. Runs until killed or until stdin closes (so a test that dies takes it along).
`--rate` sends files no faster than that (a benchmark's stand-in for a remote index).
"""

import base64
import hashlib
import http.server
import io
import os
import sys
import threading
import time
import zipfile


def wheel(name, version, payload):
    """A minimal valid wheel: the module, METADATA, WHEEL and a RECORD with hashes."""
    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\nDATA = {os.urandom(payload // 2).hex()!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: labship-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(path, data)
    return f"{module}-{version}-py3-none-any.whl", out.getvalue()


def main():
    args = sys.argv[1:]
    payload, rate = 1024, 0
    while args[:1] in (["--payload"], ["--rate"]):
        if args[0] == "--payload":
            payload = int(args[1])
        else:
            rate = int(args[1])
        args = args[2:]
    wheels = {}  # normalized project name -> [(filename, bytes)]
    for spec in args:
        name, version = spec.split("==")
        filename, data = wheel(name, version, payload)
        wheels.setdefault(name.lower().replace("_", "-"), []).append((filename, data))
    files = {f: d for ws in wheels.values() for f, d in ws}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def send(self, code, body, ctype, cache):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", cache)
            self.end_headers()
            if rate <= 0:
                self.wfile.write(body)
                return
            step = max(rate // 20, 1)
            for i in range(0, len(body), step):
                self.wfile.write(body[i:i + step])
                time.sleep(step / rate)

        def do_GET(self):
            path = self.path.split("?")[0].split("#")[0]
            parts = [p for p in path.split("/") if p]
            if parts[:1] == ["simple"] and len(parts) == 2:
                project = parts[1].lower().replace("_", "-")
                if project not in wheels:
                    return self.send(404, b"not found", "text/plain", "no-store")
                links = "".join(
                    f'<a href="/files/{f}#sha256={hashlib.sha256(d).hexdigest()}">{f}</a>\n'
                    for f, d in wheels[project]
                )
                body = f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode()
                return self.send(200, body, "text/html", "max-age=0")
            if parts[:1] == ["files"] and len(parts) == 2 and parts[1] in files:
                self.send(200, files[parts[1]], "application/octet-stream", "max-age=365000000, immutable")
                with lock:
                    print(f"download {parts[1]}", flush=True)
                return None
            return self.send(404, b"not found", "text/plain", "no-store")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"port {server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # until the caller closes it or dies


if __name__ == "__main__":
    main()
