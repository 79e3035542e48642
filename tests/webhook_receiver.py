"""A webhook receiver for tests: a plain http.server.BaseHTTPRequestHandler on 127.0.0.1.

It is written the way a site's own receiver would be: read the body, check the
X-Fx-Signature HMAC with the shared secret (answering 401 when it does not
match), parse the JSON, answer 2xx.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None  # None: the receiver has no secret to check with
    status: int
    received_at: float  # time.monotonic() in the receiving process

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """``statuses``: answers for the first requests, in order (then 200)."""

    def __init__(self, *, secret: str | None = None, statuses: Iterable[int] = ()) -> None:
        self.secret = secret
        self._statuses: Iterator[int] = iter(statuses)
        self.deliveries: list[Delivery] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                signature_ok = None
                if receiver.secret is not None:
                    expected = (
                        "sha256="
                        + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                    )
                    signature_ok = hmac.compare_digest(
                        expected, self.headers.get("X-Fx-Signature", "")
                    )
                status = next(receiver._statuses, 200)
                if signature_ok is False:
                    status = 401
                with receiver._cond:
                    receiver.deliveries.append(
                        Delivery(
                            self.path,
                            dict(self.headers),
                            body,
                            signature_ok,
                            status,
                            time.monotonic(),
                        )
                    )
                    receiver._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/fx"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        """The deliveries once there are at least ``count`` (or what came by ``timeout``)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.deliveries) >= count, timeout)
            return list(self.deliveries)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
