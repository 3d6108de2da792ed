"""A fault-injecting HTTP proxy on loopback, between dmstore and the moto S3 server.

Each proxied GET is hit with probability ``rate`` (seeded), by each fault in turn: a dropped connection, a delay, a
500 or 503 SlowDown answer, or a truncated body. Only data reads (GET) are hit, so that the test
setup's uploads pass untouched.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("drop", "delay", "500", "503", "truncate")
SLOW_DOWN = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
    b"<Message>Reduce your request rate.</Message></Error>"
)


class FaultyProxy:
    """Forward to ``upstream``; inject ``faults`` into a fraction ``rate`` of GETs (1.0: every one)
    after the first ``healthy_first`` GETs."""

    def __init__(
        self, upstream: str, rate: float, seed: int = 0, healthy_first: int = 0, faults: tuple[str, ...] = FAULTS
    ) -> None:
        self.upstream = urlsplit(upstream)
        self.faults = faults
        self.rate = rate
        self.healthy_first = healthy_first
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                proxy.forward(self, fault=None)

            def do_PUT(self) -> None:
                proxy.forward(self, fault=None)

            def do_GET(self) -> None:
                proxy.forward(self, fault=proxy.draw())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def draw(self) -> str | None:
        with self.lock:
            self.healthy_first -= 1
            if self.healthy_first >= 0 or self.random.random() >= self.rate:
                return None
            fault = self.faults[sum(self.injected.values()) % len(self.faults)]  # every kind, in turn
            self.injected[fault] += 1
            return fault

    def forward(self, handler: BaseHTTPRequestHandler, fault: str | None) -> None:
        if fault == "drop":
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        if fault in ("500", "503"):
            body = SLOW_DOWN if fault == "503" else b"<Error><Code>InternalError</Code></Error>"
            handler.send_response(int(fault))
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        if fault == "delay":
            time.sleep(0.3)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
        headers["Host"] = self.upstream.netloc
        upstream.request(handler.command, handler.path, body=body, headers=headers)
        response = upstream.getresponse()
        payload = response.read()
        handler.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "server", "date"):
                handler.send_header(key, value)
        handler.end_headers()
        if handler.command != "HEAD":
            if fault == "truncate" and len(payload) > 1:
                handler.wfile.write(payload[: len(payload) // 2])
                handler.close_connection = True
            else:
                handler.wfile.write(payload)
        upstream.close()
