"""logs/metrics.jsonl: one JSON object a line, appended as metrics arrive."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricRecord:
    """One line of metrics.jsonl."""

    time: float
    round: int
    source: str  # a collaborator's name, or "aggregator" for the aggregated value
    task: str
    name: str
    value: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class MetricsLog:
    """Append-only metrics file, safe to share between threads of one process.

    ``on_record`` sees every record once it is written (e.g. to stream it to
    dashboards); it must not block, and an exception in it is logged, not raised.
    """

    def __init__(
        self, path: Path, *, on_record: Callable[[MetricRecord], None] | None = None
    ) -> None:
        self.path = path
        self._on_record = on_record
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, *, round: int, source: str, task: str, name: str, value: float) -> None:
        record = MetricRecord(round_time(time.time()), round, source, task, name, float(value))
        line = json.dumps(record.to_json())
        with self._lock, self.path.open("a", encoding="utf-8") as stream:
            stream.write(line + "\n")
        if self._on_record is not None:
            try:
                self._on_record(record)
            except Exception:
                log.exception("metrics listener failed")


def round_time(timestamp: float) -> float:
    return float(f"{timestamp:.3f}")


def read_metrics(path: Path) -> list[dict[str, object]]:
    """Every record in a metrics file (for tests, `fx` commands and plots)."""
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]
