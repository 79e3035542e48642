"""Uploads received into a file: checked on arrival, read back as memory maps."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from numpy.typing import NDArray

from fx.algorithms.fedavg import FedAvg
from fx.tensors.codec import CodecError, iter_chunks, spec_of
from fx.tensors.staging import StagedUpdate, UpdateStager


def _model() -> dict[str, NDArray[Any]]:
    rng = np.random.default_rng(0)
    return {
        "w": rng.normal(size=(64, 33)).astype(np.float32),
        "h": rng.normal(size=100).astype(ml_dtypes.bfloat16),
        "n": np.array(2**50, dtype=np.int64),
        "mask": rng.integers(0, 2, size=9).astype(np.bool_),
        "empty": np.zeros((0, 2), dtype=np.float64),
    }


def _stage(
    update: dict[str, NDArray[Any]], tmp_path: Path, *, chunk_bytes: int, shuffle: bool = False
) -> StagedUpdate:
    stager = UpdateStager({k: spec_of(v) for k, v in _model().items()}, directory=tmp_path)
    chunks = list(iter_chunks(update, chunk_bytes))
    if shuffle:
        random.Random(1).shuffle(chunks)
    try:
        for chunk in chunks:
            stager.feed(chunk)
        return stager.finish()
    except CodecError:
        stager.discard()
        raise


@pytest.mark.parametrize(("chunk_bytes", "shuffle"), [(1 << 20, False), (7, True)])
def test_a_staged_update_reads_back_bit_for_bit(
    tmp_path: Path, chunk_bytes: int, shuffle: bool
) -> None:
    model = _model()
    staged = _stage(model, tmp_path, chunk_bytes=chunk_bytes, shuffle=shuffle)
    assert list(staged) == list(model) or shuffle
    assert staged.checked_finite
    for name, array in model.items():
        assert staged[name].dtype == array.dtype and staged[name].shape == array.shape
        assert staged[name].tobytes() == array.tobytes()
    assert isinstance(staged["w"], np.memmap)  # file-backed, not a copy in memory
    assert list(tmp_path.iterdir()) == []  # an anonymous file: nothing to clean up
    staged.close()


def test_fedavg_of_staged_updates_equals_fedavg_of_arrays(tmp_path: Path) -> None:
    model = _model()
    second = {
        k: np.logical_not(v) if v.dtype == np.bool_ else (v + v.dtype.type(1)).astype(v.dtype)
        for k, v in model.items()
    }
    in_memory, from_disk = FedAvg(), FedAvg()
    for fedavg in (in_memory, from_disk):
        fedavg.reset(model)
    for weight, update in ((3, model), (5, second)):
        in_memory.add(update, weight)
        staged = _stage(update, tmp_path, chunk_bytes=100)
        from_disk.add(staged, weight)
        staged.close()
    expected, got = in_memory.result(), from_disk.result()
    for name in model:
        assert got[name].tobytes() == expected[name].tobytes(), name


def _resident_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_folding_a_staged_update_releases_its_pages(tmp_path: Path) -> None:
    # Larger than FedAvg's release step, not a multiple of it: mapped pages count in the
    # aggregator's RSS until released; the values must be exactly those of the arrays.
    rng = np.random.default_rng(1)
    model = {"w": rng.normal(size=(3 << 20) + 5).astype(np.float32)}
    second = {"w": (model["w"] * np.float32(3)).astype(np.float32)}
    in_memory, from_disk = FedAvg(), FedAvg()
    for fedavg in (in_memory, from_disk):
        fedavg.reset(model)
    for weight, update in ((2, model), (7, second)):
        in_memory.add(update, weight)
        stager = UpdateStager({"w": spec_of(model["w"])}, directory=tmp_path)
        for chunk in iter_chunks(update, 1 << 20):
            stager.feed(chunk)
        staged = stager.finish()
        array = staged["w"]
        before = _resident_kib()
        from_disk.add({"w": array}, weight)
        grown = _resident_kib() - before
        staged.close()
        # The first add also touches the accumulator's fresh pages; the second none.
        assert grown < array.nbytes // 1024 * (1 if weight == 2 else 0) + 1024, grown
    assert from_disk.result()["w"].tobytes() == in_memory.result()["w"].tobytes()


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 7])  # aligned chunks, and chunks mid-value
def test_nan_is_refused(tmp_path: Path, chunk_bytes: int) -> None:
    update = _model()
    update["h"] = update["h"].copy()
    update["h"][50] = np.nan
    with pytest.raises(CodecError, match=r"tensor 'h': 1 NaN and 0 infinite values"):
        _stage(update, tmp_path, chunk_bytes=chunk_bytes)


def test_wrong_and_incomplete_updates_are_refused(tmp_path: Path) -> None:
    expected = {k: spec_of(v) for k, v in _model().items()}
    stager = UpdateStager(expected, directory=tmp_path)
    with pytest.raises(CodecError, match="unknown tensor 'x'"):
        stager.feed(next(iter_chunks({"x": np.zeros(2, np.float32)})))
    with pytest.raises(CodecError, match="expected float32"):
        stager.feed(next(iter_chunks({"w": np.zeros((64, 33), np.float64)})))
    stager.feed(next(iter_chunks({"w": _model()["w"]}, 100)))
    with pytest.raises(CodecError, match="incomplete tensors: 'w'"):
        stager.finish()
    stager.discard()
