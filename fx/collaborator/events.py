"""The collaborator's ear for lifecycle events: subscribe, dispatch by type, wake the task loop.

An :class:`EventListener` follows the aggregator's event stream in a daemon
thread (re-subscribing after a broken stream) and hands each event to an
:class:`EventHandlers` registry keyed by notification type. The handlers from
:func:`round_handlers` ring a :class:`RoundSignal` when a round opens or the
federation ends; the task loop waits on that signal instead of holding a
long-poll open, and falls back to the long-poll whenever the stream is down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from fx.errors import RefusedError
from fx.notify.events import Event, EventType

log = logging.getLogger(__name__)

EventHandler = Callable[[Event], None]


class EventStream(Protocol):
    """A stream of events that can be ended from another thread."""

    def __iter__(self) -> Iterator[Event]: ...

    def close(self) -> None: ...


def _log_unknown(event: Event) -> None:
    log.info(
        "ignoring event %s (training %s): this collaborator does not know the type",
        event.notification_type,
        event.training_uuid,
    )


class EventHandlers:
    """Handlers by notification type; ``default`` takes every type nobody registered.

    :meth:`dispatch` never raises: a failing handler is logged and the next
    event is handled as usual.
    """

    def __init__(self, default: EventHandler = _log_unknown) -> None:
        self._handlers: dict[str, list[EventHandler]] = {}
        self._default = default

    def on(self, notification_type: EventType | str, handler: EventHandler) -> None:
        key = (
            notification_type.value
            if isinstance(notification_type, EventType)
            else notification_type
        )
        self._handlers.setdefault(key, []).append(handler)

    def dispatch(self, event: Event) -> None:
        for handler in self._handlers.get(event.notification_type, [self._default]):
            try:
                handler(event)
            except Exception:
                log.exception("handler for %s failed", event.notification_type)


class RoundSignal:
    """What the task loop waits on: the rounds announced, and whether the event
    stream is live (when it is not, waiting returns at once).

    ``generation`` counts announcements: one that repeats an earlier round still
    wakes the loop (an aggregator restarted mid-round re-opens the round it
    resumes, and may need that round's work again).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._round = -1
        self._generation = 0
        self._finished = False
        self._live = False

    def announce(self, round: int) -> None:
        with self._cond:
            self._round = max(self._round, round)
            self._generation += 1
            self._cond.notify_all()

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def set_live(self, live: bool) -> None:
        with self._cond:
            self._live = live
            self._cond.notify_all()

    @property
    def live(self) -> bool:
        with self._cond:
            return self._live

    def wait_for_work(self, *, after_round: int, after_generation: int = 0, timeout: float) -> bool:
        """Block until a round later than ``after_round`` is announced, any round is
        announced after ``after_generation``, or the federation ends (True). False at
        once if the stream is not live, or after ``timeout``: the caller then asks
        the aggregator itself (the long-poll fallback)."""

        def news() -> bool:
            return (
                self._finished or self._round > after_round or self._generation > after_generation
            )

        with self._cond:
            return self._cond.wait_for(lambda: news() or not self._live, timeout) and news()


def round_handlers(signal: RoundSignal, *, name: str = "collaborator") -> EventHandlers:
    """Handlers that ring ``signal`` on UPDATE_ROUND_START, MODEL_TEST_ROUND and
    TRAINING_FINISHED; every other type is logged."""
    handlers = EventHandlers()

    def round_opened(event: Event) -> None:
        round = event.body.get("round")
        if not isinstance(round, int):
            log.warning("%s: %s without a round number ignored", name, event.notification_type)
            return
        log.info(
            "%s: aggregator announced %s %d (model %s)",
            name,
            event.notification_type,
            round,
            event.body.get("global_model_uuid"),
        )
        signal.announce(round)

    def started(event: Event) -> None:
        log.info("%s: training %s started", name, event.training_uuid)

    def finished(event: Event) -> None:
        log.info("%s: aggregator announced TRAINING_FINISHED", name)
        signal.finish()

    handlers.on(EventType.TRAINING_START, started)
    handlers.on(EventType.UPDATE_ROUND_START, round_opened)
    handlers.on(EventType.MODEL_TEST_ROUND, round_opened)
    handlers.on(EventType.TRAINING_FINISHED, finished)
    return handlers


class EventListener:
    """Follows ``open_stream()`` in a daemon thread, dispatching every event.

    A stream that breaks or ends is opened again after a pause (doubling up to
    ``max_backoff_s``) until :meth:`close`, a refusal, or an aggregator that
    publishes no events. ``on_live`` learns when events flow and when they stop.
    The thread never keeps the process alive, and :meth:`close` returns promptly.
    """

    def __init__(
        self,
        open_stream: Callable[[], EventStream],
        handlers: EventHandlers,
        *,
        on_live: Callable[[bool], None] | None = None,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._open_stream = open_stream
        self._handlers = handlers
        self._on_live = on_live or (lambda live: None)
        self._max_backoff_s = max_backoff_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._stream: EventStream | None = None
        self._thread = threading.Thread(target=self._run, name="fx-events", daemon=True)

    def start(self) -> EventListener:
        self._thread.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                stream = self._open_stream()
                with self._lock:
                    self._stream = stream
                if self._stopping.is_set():
                    stream.close()
                    return
                for event in stream:
                    self._on_live(True)
                    backoff = 0.2
                    self._handlers.dispatch(event)
                log.debug("event stream ended")
            except (RefusedError, NotImplementedError) as exc:
                log.warning("not following the aggregator's events: %s", exc)
                return
            except Exception as exc:
                log.info("event stream broke (%s); subscribing again in %.1fs", exc, backoff)
            finally:
                self._on_live(False)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, self._max_backoff_s)
