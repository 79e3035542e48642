"""Fan-out of items (events, metric records) to live subscribers.

The publisher never waits for a subscriber: each subscriber has its own
bounded queue, and one that falls ``queue_size`` items behind is cut off (its
iteration ends with ``overflowed`` set) rather than slowing everyone down or
growing without bound. A subscriber may ask for a replay of the recent
history first, so one that connects late still sees what it missed.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Broadcast", "Subscription"]

T = TypeVar("T")


class Subscription(Generic[T]):
    """One subscriber's queue; iterate it to receive items as they are published.

    Iteration blocks until an item arrives and ends when the broadcast closes
    (after the queued items), or at once when :meth:`close` is called or the
    subscriber overflowed.
    """

    def __init__(self, broadcast: Broadcast[T], items: list[T], limit: int) -> None:
        self._broadcast = broadcast
        self._cond = threading.Condition(threading.Lock())
        self._items: collections.deque[T] = collections.deque(items)
        self._limit = limit
        self._ended = False  # no more items will come; drain the queue
        self._cancelled = False  # stop now
        self.overflowed = False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        with self._cond:
            while not self._items and not (self._ended or self._cancelled):
                self._cond.wait()
            if self._cancelled or not self._items:
                raise StopIteration
            return self._items.popleft()

    def close(self) -> None:
        """Stop receiving (idempotent; safe from any thread, e.g. an RPC's done-callback)."""
        self._broadcast._remove(self)
        with self._cond:
            self._cancelled = True
            self._items.clear()
            self._cond.notify_all()

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- called by the broadcast ------------------------------------------------

    def _offer(self, item: T) -> bool:
        """Queue ``item``; False (and cancelled) if the queue is full."""
        with self._cond:
            if self._cancelled:
                return False
            if len(self._items) >= self._limit:
                self.overflowed = True
                self._cancelled = True
                self._items.clear()
                self._cond.notify_all()
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def _end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()


class Broadcast(Generic[T]):
    """Publish items to every current subscriber without ever blocking on one.

    ``history``: how many recent items to keep for replay (0: none).
    ``queue_size``: how far a subscriber may fall behind before it is cut off.
    """

    def __init__(self, *, queue_size: int = 1024, history: int = 10_000) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self._lock = threading.Lock()
        self._queue_size = queue_size
        self._history: collections.deque[T] = collections.deque(maxlen=history)
        self._subscribers: list[Subscription[T]] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    def publish(self, item: T) -> None:
        """Deliver ``item`` to every subscriber's queue (after close: ignored)."""
        # Offering only appends to a queue (never waits), so doing it under the lock
        # costs little and keeps every subscriber's order equal to the publish order.
        with self._lock:
            if self._closed:
                return
            self._history.append(item)
            self._subscribers = [sub for sub in self._subscribers if sub._offer(item)]

    def subscribe(self, *, replay: bool = False) -> Subscription[T]:
        """A new subscription; with ``replay`` it first yields the kept history.

        Subscribing after :meth:`close` still replays, then ends.
        """
        with self._lock:
            items = list(self._history) if replay else []
            subscription = Subscription(self, items, limit=len(items) + self._queue_size)
            if self._closed:
                subscription._end()
            else:
                # Registered under the same lock as the history copy: no item is
                # both replayed and delivered, and none falls between the two.
                self._subscribers.append(subscription)
            return subscription

    def close(self) -> None:
        """No more items: every subscriber drains its queue, then its iteration ends."""
        with self._lock:
            self._closed = True
            subscribers, self._subscribers = self._subscribers, []
        for subscription in subscribers:
            subscription._end()

    def _remove(self, subscription: Subscription[T]) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)
