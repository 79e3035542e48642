"""Webhooks: POST every lifecycle event, as JSON, to the URLs listed in plan.yaml.

Delivery never holds up training. The aggregator only puts the event on each
webhook's bounded queue (a full queue drops the event, with a warning); one
daemon thread per URL posts the events in order, each attempt with a short
timeout, retrying a failed delivery a bounded number of times with
exponential backoff. A webhook that is dead or slow delays only its own later
events.

Each POST carries::

    Content-Type: application/json
    X-Fx-Event: <notification_type>
    X-Fx-Delivery: <a UUID, the same on every attempt of one delivery>
    X-Fx-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>   (with a secret)

A receiver checks the signature with :func:`verify` (or the same three lines
in any language) before trusting the body. Retried: connection errors,
timeouts, 5xx, 408, 425 and 429. Not retried: any other answer, including
redirects (a webhook URL must answer by itself).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fx import __version__
from fx.notify.events import Event

log = logging.getLogger(__name__)

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "DeliveryPolicy",
    "DeliveryStats",
    "Webhook",
    "WebhookNotifier",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-Fx-Signature"
EVENT_HEADER = "X-Fx-Event"
DELIVERY_HEADER = "X-Fx-Delivery"
_SIGNATURE_PREFIX = "sha256="
_RETRYABLE_STATUS = frozenset({408, 425, 429})


def sign(body: bytes, secret: str) -> str:
    """The X-Fx-Signature value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return _SIGNATURE_PREFIX + digest


def verify(body: bytes, secret: str, signature: str | None) -> bool:
    """Whether ``signature`` (an X-Fx-Signature header) is ``body`` signed with ``secret``."""
    if not signature:
        return False
    return hmac.compare_digest(sign(body, secret), signature.strip())


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a webhook URL is http(s)://host[:port]/path, got {self.url!r}")

    @property
    def display(self) -> str:
        """The URL without its path or query, which may hold a token (fit for logs)."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}/…" if parts.path.strip("/") else self.url


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard to try. The worst case for one event is about
    ``attempts * timeout_s`` plus the backoff pauses, spent on the webhook's own thread."""

    timeout_s: float = 5.0
    attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    queue_size: int = 256

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.queue_size < 1 or self.timeout_s <= 0:
            raise ValueError(f"invalid delivery policy: {self}")


@dataclass
class DeliveryStats:
    delivered: int = 0
    failed: int = 0  # gave up after the last attempt (or a non-retryable answer)
    dropped: int = 0  # never attempted: queue full, or left over at close


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx surfaces as an HTTPError: not delivered


_STOP = object()


class _Worker:
    """One webhook's queue and delivery thread."""

    def __init__(self, webhook: Webhook, policy: DeliveryPolicy, index: int) -> None:
        self.webhook = webhook
        self.policy = policy
        self.stats = DeliveryStats()
        self.queue: queue.Queue[object] = queue.Queue(maxsize=policy.queue_size)
        self.abandon = threading.Event()
        self._opener = urllib.request.build_opener(_NoRedirect())
        self.thread = threading.Thread(target=self._run, name=f"fx-webhook-{index}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP or self.abandon.is_set():
                return
            assert isinstance(item, Event)
            self._deliver(item)

    def _deliver(self, event: Event) -> None:
        body = event.to_bytes()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"fx/{__version__}",
            EVENT_HEADER: event.notification_type,
            DELIVERY_HEADER: str(uuid.uuid4()),
        }
        if self.webhook.secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, self.webhook.secret)
        pause = self.policy.backoff_s
        for attempt in range(1, self.policy.attempts + 1):
            problem, retryable = self._post(body, headers)
            if problem is None:
                self.stats.delivered += 1
                return
            last = attempt == self.policy.attempts
            if not retryable or last:
                self.stats.failed += 1
                log.warning(
                    "webhook %s: gave up on %s after %d attempt(s): %s",
                    self.webhook.display,
                    event.notification_type,
                    attempt,
                    problem,
                )
                return
            log.info(
                "webhook %s: %s (attempt %d of %d); retrying in %.1fs",
                self.webhook.display,
                problem,
                attempt,
                self.policy.attempts,
                pause,
            )
            if self.abandon.wait(pause):
                self.stats.dropped += 1
                return
            pause = min(pause * 2, self.policy.max_backoff_s)

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[str | None, bool]:
        """(None, _) when delivered, else (what went wrong, whether to retry)."""
        request = urllib.request.Request(
            self.webhook.url, data=body, headers=headers, method="POST"
        )
        try:
            with self._opener.open(request, timeout=self.policy.timeout_s) as response:
                response.read(65536)
            return None, False
        except urllib.error.HTTPError as exc:
            exc.close()
            retryable = exc.code >= 500 or exc.code in _RETRYABLE_STATUS
            return f"HTTP {exc.code} {exc.reason}", retryable
        except urllib.error.URLError as exc:
            return f"cannot connect: {exc.reason}", True
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, True


class WebhookNotifier:
    """An EventSink that POSTs each event to every webhook, in the background."""

    def __init__(self, webhooks: Sequence[Webhook], policy: DeliveryPolicy | None = None) -> None:
        self._policy = policy or DeliveryPolicy()
        self._workers = [
            _Worker(webhook, self._policy, index) for index, webhook in enumerate(webhooks)
        ]
        self._closed = False

    def __call__(self, event: Event) -> None:
        """Queue ``event`` for every webhook; returns at once, whatever the webhooks do."""
        if self._closed:
            return
        for worker in self._workers:
            try:
                worker.queue.put_nowait(event)
            except queue.Full:
                worker.stats.dropped += 1
                log.warning(
                    "webhook %s is %d events behind: dropped %s",
                    worker.webhook.display,
                    self._policy.queue_size,
                    event.notification_type,
                )

    @property
    def stats(self) -> dict[str, DeliveryStats]:
        """Per webhook URL: how many events were delivered, failed, dropped."""
        return {worker.webhook.url: worker.stats for worker in self._workers}

    def close(self, *, drain_s: float = 5.0) -> None:
        """Stop taking events; deliver what is queued for up to ``drain_s`` seconds,
        then abandon the rest (the delivery threads are daemons: they never keep
        the process alive)."""
        self._closed = True
        for worker in self._workers:
            # A full queue: the worker finds `abandon` set once the deadline passes.
            with contextlib.suppress(queue.Full):
                worker.queue.put_nowait(_STOP)
        give_up_at = time.monotonic() + drain_s
        for worker in self._workers:
            worker.thread.join(max(0.0, give_up_at - time.monotonic()))
        for worker in self._workers:
            worker.abandon.set()
            if worker.thread.is_alive() or not worker.queue.empty():
                with worker.queue.mutex:
                    left = sum(1 for item in worker.queue.queue if item is not _STOP)
                worker.stats.dropped += left
                log.warning(
                    "webhook %s: stopped with %d event(s) undelivered after %.1fs",
                    worker.webhook.display,
                    left + (1 if worker.thread.is_alive() else 0),
                    drain_s,
                )
