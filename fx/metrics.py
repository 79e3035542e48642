"""logs/metrics.jsonl: one JSON object a line, appended as metrics arrive."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path


class MetricsLog:
    """Append-only metrics file, safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, *, round: int, source: str, task: str, name: str, value: float) -> None:
        line = json.dumps(
            {
                "time": round_time(time.time()),
                "round": round,
                "source": source,
                "task": task,
                "name": name,
                "value": float(value),
            }
        )
        with self._lock, self.path.open("a", encoding="utf-8") as stream:
            stream.write(line + "\n")


def round_time(timestamp: float) -> float:
    return float(f"{timestamp:.3f}")


def read_metrics(path: Path) -> list[dict[str, object]]:
    """Every record in a metrics file (for tests, `fx` commands and plots)."""
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]
