"""Where the aggregator keeps models: save/last.safetensors and save/best.safetensors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fx.tensors.safetensors_io import (
    WrittenFile,
    load_metadata,
    load_tensors,
    save_tensors,
    write_tensors,
)


class ModelStore:
    def __init__(self, save_dir: Path) -> None:
        self.save_dir = save_dir
        save_dir.mkdir(parents=True, exist_ok=True)

    @property
    def last_path(self) -> Path:
        return self.save_dir / "last.safetensors"

    @property
    def best_path(self) -> Path:
        return self.save_dir / "best.safetensors"

    def write_last(
        self, tensors: Mapping[str, np.ndarray], *, version: int, model_uuid: str
    ) -> WrittenFile:
        """save/last.safetensors, written but not yet committed (see write_tensors)."""
        return write_tensors(self.last_path, tensors, _metadata(version, model_uuid))

    def save_best(
        self,
        tensors: Mapping[str, np.ndarray],
        *,
        version: int,
        model_uuid: str,
        metric: str,
        value: float,
    ) -> None:
        metadata = _metadata(version, model_uuid) | {"metric": metric, "value": repr(value)}
        save_tensors(self.best_path, tensors, metadata)

    def load_last(self) -> dict[str, np.ndarray]:
        return load_tensors(self.last_path)

    def load_best(self) -> tuple[int, str, dict[str, np.ndarray]] | None:
        """(model version, model uuid, tensors) of the best model, or None if none is saved."""
        for _ in range(3):
            try:
                before = load_metadata(self.best_path)
                tensors = load_tensors(self.best_path)
                after = load_metadata(self.best_path)
            except FileNotFoundError:
                return None
            if before == after:  # not replaced while we read it (uuids are never reused)
                break
        return int(after.get("model_version", "0")), after.get("model_uuid", ""), tensors


def _metadata(version: int, model_uuid: str) -> dict[str, str]:
    return {"format": "fx", "model_version": str(version), "model_uuid": model_uuid}
