"""Models on disk: every dtype, interoperable with safetensors.torch, atomic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from safetensors.torch import load_file, save_file

from fx.tensors.dtypes import DTYPE_NAMES
from fx.tensors.errors import CodecError
from fx.tensors.safetensors_io import load_metadata, load_tensors, save_tensors
from tests.samples import sample


def every_dtype_model() -> dict[str, NDArray[Any]]:
    model: dict[str, NDArray[Any]] = {}
    # Interleave widths so the writer's alignment layout differs from header order.
    for i, dtype in enumerate(DTYPE_NAMES[::-1]):
        model[f"{dtype}.w"] = sample(dtype, (3, 5), seed=i)
        model[f"{dtype}.scalar"] = sample(dtype, (), seed=50 + i)
        model[f"{dtype}.empty"] = sample(dtype, (0,), seed=90 + i)
    return model


def test_every_dtype_round_trips_bit_exact_in_order(tmp_path: Path) -> None:
    model = every_dtype_model()
    path = tmp_path / "model.safetensors"
    save_tensors(path, model, metadata={"round": "3", "note": "ünïcode"})
    loaded = load_tensors(path)
    assert list(loaded) == list(model)
    for name, array in model.items():
        assert loaded[name].dtype == array.dtype, name
        assert loaded[name].shape == array.shape, name
        assert loaded[name].tobytes() == array.tobytes(), name
        assert loaded[name].flags.writeable
    assert load_metadata(path) == {"round": "3", "note": "ünïcode"}


def test_no_metadata_reads_as_empty(tmp_path: Path) -> None:
    save_tensors(tmp_path / "m.safetensors", {"a": np.ones(2, np.float32)})
    assert load_metadata(tmp_path / "m.safetensors") == {}


def test_tensor_data_is_aligned_and_header_padded(tmp_path: Path) -> None:
    model: dict[str, NDArray[Any]] = {
        "b": np.ones(3, np.int8),
        "d": np.ones(3, np.float64),
        "h": np.ones(1, np.float16),
    }
    path = tmp_path / "m.safetensors"
    save_tensors(path, model)
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert (8 + header_len) % 8 == 0
    header = json.loads(raw[8 : 8 + header_len])
    for name, array in model.items():
        assert header[name]["data_offsets"][0] % array.dtype.itemsize == 0


INTEROP = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
}


def test_files_we_write_load_in_safetensors_torch(tmp_path: Path) -> None:
    model = {f"{d}.w": sample(d, (4, 3), seed=i) for i, d in enumerate(INTEROP)}
    model["bn.num_batches_tracked"] = np.array(7, dtype=np.int64)
    save_tensors(tmp_path / "m.safetensors", model)
    loaded = load_file(tmp_path / "m.safetensors")
    assert set(loaded) == set(model)
    for dtype, torch_dtype in INTEROP.items():
        tensor = loaded[f"{dtype}.w"]
        assert tensor.dtype == torch_dtype
        bits = tensor.view(torch.int16) if torch_dtype == torch.bfloat16 else tensor
        expected = model[f"{dtype}.w"]
        if dtype == "bfloat16":
            expected = expected.view(np.int16)
        assert bits.numpy().tobytes() == expected.tobytes()
    assert loaded["bn.num_batches_tracked"].dtype == torch.int64
    assert loaded["bn.num_batches_tracked"].shape == ()
    assert int(loaded["bn.num_batches_tracked"]) == 7


def test_files_safetensors_torch_writes_load_here(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    written = {
        "f32": torch.randn(5, 2, generator=generator),
        "f16": torch.randn(3, generator=generator).half(),
        "bf16": torch.tensor([1.5, -2.25, 1e30], dtype=torch.bfloat16),
        "i64": torch.arange(6, dtype=torch.int64).reshape(2, 3),
    }
    save_file(written, tmp_path / "t.safetensors", metadata={"format": "pt"})
    loaded = load_tensors(tmp_path / "t.safetensors")
    assert loaded["f32"].dtype == np.float32
    assert loaded["f16"].dtype == np.float16
    assert loaded["bf16"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert loaded["i64"].dtype == np.int64
    np.testing.assert_array_equal(loaded["f32"], written["f32"].numpy())
    np.testing.assert_array_equal(loaded["f16"], written["f16"].numpy())
    assert loaded["bf16"].view(np.int16).tolist() == written["bf16"].view(torch.int16).tolist()
    np.testing.assert_array_equal(loaded["i64"], written["i64"].numpy())
    assert load_metadata(tmp_path / "t.safetensors") == {"format": "pt"}


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "last.safetensors"
    save_tensors(path, {"w": np.zeros(3, np.float32)})
    save_tensors(path, {"w": np.ones(3, np.float32)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]
    np.testing.assert_array_equal(load_tensors(path)["w"], np.ones(3, np.float32))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "last.safetensors"
    save_tensors(path, {"w": np.zeros(3, np.float32)})
    with pytest.raises(CodecError, match="unsupported dtype"):
        save_tensors(path, {"w": np.zeros(3, np.complex64)})
    with pytest.raises(CodecError, match="metadata must map strings to strings"):
        save_tensors(path, {"w": np.ones(3, np.float32)}, metadata={"round": 3})  # type: ignore[dict-item]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]
    np.testing.assert_array_equal(load_tensors(path)["w"], np.zeros(3, np.float32))


def _write_raw(path: Path, header: dict[str, Any], data: bytes) -> None:
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, "'C64'"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "do not hold"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, "cover 8"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            },
            b"\0" * 8,
            "starts at byte 4",
        ),
        ({"a": {"dtype": "F32", "shape": "x", "data_offsets": [0, 8]}}, b"", "invalid shape"),
        ({"__metadata__": {"k": 1}}, b"", "__metadata__ must map"),
    ],
)
def test_malformed_files_are_refused(
    tmp_path: Path, header: dict[str, Any], data: bytes, message: str
) -> None:
    path = tmp_path / "bad.safetensors"
    _write_raw(path, header, data)
    with pytest.raises(CodecError, match=message):
        load_tensors(path)


def test_truncated_and_garbage_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x05\0\0")
    with pytest.raises(CodecError, match="shorter than 8 bytes"):
        load_tensors(path)
    path.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(CodecError, match="header length"):
        load_tensors(path)
    path.write_bytes((4).to_bytes(8, "little") + b"\x80abc")
    with pytest.raises(CodecError, match="unreadable safetensors header"):
        load_tensors(path)
