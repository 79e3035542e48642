"""Checkpoints: after every finished round, enough state to resume at the next one.

The model goes to save/checkpoints/model-vNNNNN.safetensors (temp file, fsync,
rename); then one SQLite transaction records the round and points at that
file. A crash between the two leaves the previous checkpoint intact; a crash
after leaves the new one. Older model files are removed only after the commit.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fx.tensors.safetensors_io import link_file, load_tensors, map_tensors, save_tensors

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    federation_id TEXT NOT NULL,
    training_uuid TEXT NOT NULL,
    next_round INTEGER NOT NULL,
    model_version INTEGER NOT NULL,
    model_uuid TEXT NOT NULL,
    model_file TEXT NOT NULL,
    best_value REAL,
    finished INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    closed_at REAL NOT NULL,
    reporters TEXT NOT NULL,
    missing TEXT NOT NULL,
    metrics TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class ResumeState:
    """Where a federation stands after its last finished round."""

    federation_id: str
    training_uuid: str
    next_round: int
    model_version: int
    model_uuid: str
    best_value: float | None
    finished: bool


@dataclass(frozen=True)
class RoundRecord:
    round: int
    reporters: tuple[str, ...]
    missing: tuple[str, ...]
    metrics: Mapping[str, float]


class CheckpointStore:
    def __init__(self, save_dir: Path) -> None:
        self.directory = save_dir / "checkpoints"
        self.db_path = save_dir / "state.db"

    def _connect(self) -> sqlite3.Connection:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.db_path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.executescript(_SCHEMA)
        return connection

    def exists(self) -> bool:
        return self.db_path.exists() and self.load_state() is not None

    def load_state(self) -> ResumeState | None:
        if not self.db_path.exists():
            return None
        connection = self._connect()
        try:
            row = connection.execute(
                "SELECT federation_id, training_uuid, next_round, model_version, model_uuid, "
                "best_value, finished FROM state WHERE id = 1"
            ).fetchone()
        finally:
            connection.close()
        if row is None:
            return None
        return ResumeState(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]))

    def load_model(self, *, mapped: bool = False) -> dict[str, np.ndarray]:
        """The checkpointed model; ``mapped``: as read-only memory maps of its file."""
        connection = self._connect()
        try:
            (model_file,) = connection.execute(
                "SELECT model_file FROM state WHERE id = 1"
            ).fetchone()
        finally:
            connection.close()
        path = self.directory / model_file
        return map_tensors(path) if mapped else load_tensors(path)

    def rounds(self) -> list[RoundRecord]:
        if not self.db_path.exists():
            return []
        connection = self._connect()
        try:
            rows = connection.execute(
                "SELECT round, reporters, missing, metrics FROM rounds ORDER BY round"
            ).fetchall()
        finally:
            connection.close()
        return [
            RoundRecord(r[0], tuple(json.loads(r[1])), tuple(json.loads(r[2])), json.loads(r[3]))
            for r in rows
        ]

    def save(
        self,
        state: ResumeState,
        model: Mapping[str, np.ndarray] | None,
        record: RoundRecord,
        *,
        model_copy: Path | None = None,
    ) -> None:
        """Persist one finished round atomically (see the module docstring).

        ``model_copy``: a file already durably holding the model (save/last.safetensors,
        just written); the checkpoint links to it instead of writing the model again,
        or, where links are not possible, copies it. ``model`` may then be None.
        """
        if model is None and model_copy is None:
            raise ValueError("a checkpoint needs the model or a file holding it")
        model_file = f"model-v{state.model_version:05d}.safetensors"
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / model_file
        if not target.exists() and (model_copy is None or not link_file(model_copy, target)):
            if model is None:
                assert model_copy is not None  # checked above
                model = map_tensors(model_copy)  # read through, not into memory
            save_tensors(target, model, {"model_uuid": state.model_uuid})
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                "INSERT OR REPLACE INTO state VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    state.federation_id,
                    state.training_uuid,
                    state.next_round,
                    state.model_version,
                    state.model_uuid,
                    model_file,
                    state.best_value,
                    int(state.finished),
                    time.time(),
                ),
            )
            connection.execute(
                "INSERT OR REPLACE INTO rounds VALUES (?, ?, ?, ?, ?)",
                (
                    record.round,
                    time.time(),
                    json.dumps(list(record.reporters)),
                    json.dumps(list(record.missing)),
                    json.dumps(dict(record.metrics)),
                ),
            )
            connection.execute("COMMIT")
        finally:
            connection.close()
        for stale in self.directory.glob("model-v*.safetensors"):
            if stale.name != model_file:
                stale.unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget the federation's progress (``fx aggregator start --restart``)."""
        for path in (
            self.db_path,
            self.db_path.with_name(self.db_path.name + "-wal"),
            self.db_path.with_name(self.db_path.name + "-shm"),
        ):
            path.unlink(missing_ok=True)
        if self.directory.exists():
            for stale in self.directory.glob("model-v*.safetensors"):
                stale.unlink()
