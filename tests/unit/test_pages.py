"""Mapped tensors: map_tensors reads nothing up front, release_pages gives pages back
without changing a value, and never touches memory whose pages it must not drop."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest

from fx.tensors.codec import CodecError, iter_chunks
from fx.tensors.pages import release_pages
from fx.tensors.safetensors_io import load_tensors, map_tensors, save_tensors
from tests.samples import sample

needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")

MIB = 1 << 20


def _file_resident_kib() -> int:
    """Resident pages of file mappings in this process (RssFile), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def _saved(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    model = {
        "big": sample("float32", (6 * MIB // 4 + 3,), seed=1),  # not a whole number of pages
        "small": sample("int64", (3, 5), seed=2),
        "half": sample("bfloat16", (7, 9), seed=3),
        "flag": sample("bool", (11,), seed=4),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    path = tmp_path / "model.safetensors"
    save_tensors(path, model)
    return path, model


def test_map_tensors_gives_the_saved_values_read_only(tmp_path: Path) -> None:
    path, model = _saved(tmp_path)
    mapped = map_tensors(path)
    assert list(mapped) == list(model)
    for name, array in model.items():
        assert mapped[name].dtype == array.dtype and mapped[name].shape == array.shape
        assert mapped[name].tobytes() == array.tobytes()
        assert not mapped[name].flags.writeable
    assert {k: v.tobytes() for k, v in load_tensors(path).items()} == {
        k: v.tobytes() for k, v in mapped.items()
    }


def test_a_mapped_file_survives_being_replaced_by_rename(tmp_path: Path) -> None:
    path, model = _saved(tmp_path)
    mapped = map_tensors(path)
    save_tensors(path, {name: np.zeros_like(array) for name, array in model.items()})
    assert mapped["big"].tobytes() == model["big"].tobytes()  # still the old file's bytes


def test_map_tensors_refuses_a_truncated_file(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    with pytest.raises(CodecError, match="the file has"):
        map_tensors(path)


@needs_proc
def test_release_pages_drops_what_was_read_and_keeps_the_values(tmp_path: Path) -> None:
    path, model = _saved(tmp_path)
    mapped = map_tensors(path)
    big = mapped["big"]
    before = _file_resident_kib()
    assert big.tobytes() == model["big"].tobytes()
    read = _file_resident_kib() - before
    assert read >= 5 * 1024, read  # reading a mapped tensor makes it resident...
    for chunk in iter_chunks({"big": big}, MIB):  # ...and releasing chunk by chunk, as
        release_pages(chunk.data)  # the encoder does, gives it all back
    assert _file_resident_kib() - before < 256
    assert big.tobytes() == model["big"].tobytes()  # the next read sees the same bytes


@needs_proc
def test_release_pages_of_a_range_releases_that_range(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    big = map_tensors(path)["big"]
    before = _file_resident_kib()
    big.view(np.uint8).max()  # read it all
    read = _file_resident_kib() - before
    release_pages(big[big.size // 2 :])  # a view: the second half only
    left = _file_resident_kib() - before
    # At least the 3 MiB asked for is released, and not everything (the kernel may
    # account for mapped pages in coarser units than it faults them in).
    assert read - left >= 3 * 1024 - 256 and left > 1024, (read, left)


def test_release_pages_never_drops_anonymous_or_private_memory(tmp_path: Path) -> None:
    path, model = _saved(tmp_path)
    anonymous = model["big"].copy()
    release_pages(anonymous)  # MADV_DONTNEED here would zero it
    assert anonymous.tobytes() == model["big"].tobytes()

    private = np.memmap(path, dtype=np.uint8, mode="c")  # copy-on-write
    private[:] = 7
    release_pages(private)  # would lose the writes
    assert int(private.min()) == 7

    with open(path, "rb") as f:
        copy = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    writable = np.frombuffer(copy, dtype=np.uint8)
    writable[:] = 9
    release_pages(writable.data)
    assert int(writable.min()) == 9


def test_writing_a_mapped_model_to_another_file_copies_it_exactly(tmp_path: Path) -> None:
    path, model = _saved(tmp_path)
    copy = tmp_path / "copy.safetensors"
    save_tensors(copy, map_tensors(path))  # read through, releasing as it goes
    assert {k: v.tobytes() for k, v in load_tensors(copy).items()} == {
        k: v.tobytes() for k, v in model.items()
    }
