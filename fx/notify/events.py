"""Lifecycle events: what the aggregator announces, in its own vocabulary.

An event is one JSON object::

    {"notification_type": "UPDATE_ROUND_START",
     "training_uuid": "9b0c...",
     "body": {"round": 3, "global_model_uuid": "51f2..."}}

The same object goes to collaborators on the Subscribe stream and is POSTed to
webhooks (see docs/protocol.md for when each type fires). Receivers dispatch on
``notification_type`` and must tolerate types they do not know: the
vocabulary may grow.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

__all__ = [
    "Event",
    "EventSink",
    "EventType",
    "FanOut",
    "model_test_round",
    "training_finished",
    "training_start",
    "update_round_start",
]


class EventType(str, enum.Enum):
    """The notification types the aggregator emits."""

    TRAINING_START = "TRAINING_START"
    """The federation started; body: {global_model_uuid} (the initial model)."""
    UPDATE_ROUND_START = "UPDATE_ROUND_START"
    """A training round opened; body: {round, global_model_uuid} (the model to download)."""
    MODEL_TEST_ROUND = "MODEL_TEST_ROUND"
    """The final validate-only round opened; body: {round, global_model_uuid}."""
    TRAINING_FINISHED = "TRAINING_FINISHED"
    """The federation is over; body: {global_model_uuid} (the model it ends with)."""


@dataclass(frozen=True)
class Event:
    """One lifecycle event. ``notification_type`` is a plain string so that a
    receiver can hold (and pass to its default handler) a type it does not know."""

    notification_type: str
    training_uuid: str
    body: Mapping[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> EventType | None:
        """The known type, or None for a type this version of fx does not know."""
        try:
            return EventType(self.notification_type)
        except ValueError:
            return None

    def to_json(self) -> dict[str, Any]:
        return {
            "notification_type": self.notification_type,
            "training_uuid": self.training_uuid,
            "body": dict(self.body),
        }

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON: the exact bytes a webhook receives (and that are signed)."""
        return json.dumps(self.to_json(), separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, value: object) -> Event:
        """Parse the JSON shape; ValueError naming what is wrong."""
        if not isinstance(value, Mapping):
            raise ValueError(f"an event is a JSON object, got {type(value).__name__}")
        kind, training, body = (
            value.get("notification_type"),
            value.get("training_uuid"),
            value.get("body", {}),
        )
        if not isinstance(kind, str) or not kind:
            raise ValueError("event has no notification_type")
        if not isinstance(training, str):
            raise ValueError(f"{kind} event has no training_uuid")
        if not isinstance(body, Mapping):
            raise ValueError(f"{kind} event body is not a JSON object")
        return cls(kind, training, dict(body))

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Event:
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"an event is JSON: {exc}") from None
        return cls.from_json(value)


def training_start(training_uuid: str, *, model_uuid: str) -> Event:
    return Event(EventType.TRAINING_START.value, training_uuid, {"global_model_uuid": model_uuid})


def update_round_start(training_uuid: str, *, round: int, model_uuid: str) -> Event:
    return Event(
        EventType.UPDATE_ROUND_START.value,
        training_uuid,
        {"round": round, "global_model_uuid": model_uuid},
    )


def model_test_round(training_uuid: str, *, round: int, model_uuid: str) -> Event:
    return Event(
        EventType.MODEL_TEST_ROUND.value,
        training_uuid,
        {"round": round, "global_model_uuid": model_uuid},
    )


def training_finished(training_uuid: str, *, model_uuid: str) -> Event:
    return Event(
        EventType.TRAINING_FINISHED.value, training_uuid, {"global_model_uuid": model_uuid}
    )


class EventSink(Protocol):
    """Where the aggregator core sends events. Must return quickly and never block
    on the network: the core calls it from the thread that closed a round."""

    def __call__(self, event: Event, /) -> None: ...


class FanOut:
    """An EventSink that hands each event to several sinks; one that raises is
    logged and never keeps the event from the others (or breaks a round)."""

    def __init__(self, sinks: Iterable[EventSink]) -> None:
        self._sinks = tuple(sinks)

    def __call__(self, event: Event) -> None:
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:
                log.exception("event sink %r failed on %s", sink, event.notification_type)
