"""Named tensors -> chunks -> tensors: bit-exact, any order, any size."""

from __future__ import annotations

import os
import random
import resource
import sys
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from fx.tensors.codec import (
    Chunk,
    CodecError,
    TensorAssembler,
    iter_chunks,
    spec_of,
)
from fx.tensors.dtypes import DTYPE_NAMES, dtype_from_name, dtype_name
from tests.samples import available_ram, sample

MiB = 1 << 20


def every_dtype_model() -> dict[str, NDArray[Any]]:
    model: dict[str, NDArray[Any]] = {}
    for i, dtype in enumerate(DTYPE_NAMES):
        model[f"{dtype}.matrix"] = sample(dtype, (7, 5), seed=i)
        model[f"{dtype}.scalar"] = sample(dtype, (), seed=100 + i)
        model[f"{dtype}.empty"] = sample(dtype, (0, 3), seed=200 + i)
    model["bn.num_batches_tracked"] = np.array(12345678901, dtype=np.int64)
    return model


def assert_bit_exact(got: dict[str, NDArray[Any]], want: dict[str, NDArray[Any]]) -> None:
    assert list(got) == list(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype, name
        assert got[name].shape == array.shape, name
        assert got[name].tobytes() == array.tobytes(), name


def assemble(chunks: list[Chunk], assembler: TensorAssembler | None = None) -> dict[str, Any]:
    assembler = assembler or TensorAssembler()
    for chunk in chunks:
        assembler.feed(chunk)
    return assembler.finish()


def test_dtype_names_round_trip() -> None:
    for name in DTYPE_NAMES:
        assert dtype_name(dtype_from_name(name)) == name
    assert dtype_from_name("bfloat16") == np.dtype(ml_dtypes.bfloat16)
    assert dtype_name(np.dtype(">f4")) == "float32"
    with pytest.raises(CodecError, match="unsupported dtype 'complex64'"):
        dtype_from_name("complex64")
    with pytest.raises(ValueError, match="unsupported dtype"):
        dtype_name(np.dtype(np.complex64))


def test_every_dtype_round_trips_bit_exact_in_many_small_chunks() -> None:
    model = every_dtype_model()
    chunks = list(iter_chunks(model, chunk_bytes=3))
    # 3-byte chunks split items of every width >1 across chunks.
    assert len(chunks) > 2 * len(model)
    assert_bit_exact(assemble(chunks), model)


def test_out_of_order_delivery_round_trips() -> None:
    model = every_dtype_model()
    chunks = list(iter_chunks(model, chunk_bytes=8))
    random.Random(7).shuffle(chunks)
    result = assemble(chunks)
    assert set(result) == set(model)
    for name, array in model.items():
        assert result[name].dtype == array.dtype
        assert result[name].tobytes() == array.tobytes()


def test_bfloat16_and_int64_values_survive() -> None:
    values = np.array([1.5, -0.0078125, 3.0e38, np.inf], dtype=ml_dtypes.bfloat16)
    steps = np.array(2**62 + 1, dtype=np.int64)
    result = assemble(list(iter_chunks({"w": values, "steps": steps}, chunk_bytes=1)))
    assert result["w"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert result["w"].view(np.uint16).tolist() == values.view(np.uint16).tolist()
    assert result["steps"].dtype == np.int64
    assert result["steps"].shape == ()
    assert int(result["steps"]) == 2**62 + 1


def test_empty_tensor_is_one_chunk_with_no_data() -> None:
    chunks = list(iter_chunks({"e": np.zeros((4, 0), dtype=np.float16)}))
    assert len(chunks) == 1
    assert (chunks[0].total_bytes, len(chunks[0].data), chunks[0].shape) == (0, 0, (4, 0))
    assert assemble(chunks)["e"].shape == (4, 0)


def test_chunks_are_zero_copy_views_of_the_tensor() -> None:
    array = np.arange(1000, dtype=np.float32)
    chunks = list(iter_chunks({"a": array}, chunk_bytes=1000))
    assert [c.offset for c in chunks] == [0, 1000, 2000, 3000]
    for chunk in chunks:
        assert isinstance(chunk.data, memoryview)
        assert np.shares_memory(np.frombuffer(chunk.data, dtype=np.uint8), array)


def test_non_contiguous_and_big_endian_tensors_travel_as_little_endian_c_order() -> None:
    matrix = np.arange(12, dtype=np.float64).reshape(3, 4)
    big = np.arange(5, dtype=">i4")
    tensors: dict[str, NDArray[Any]] = {"t": matrix.T, "big": big}
    result = assemble(list(iter_chunks(tensors, chunk_bytes=5)))
    np.testing.assert_array_equal(result["t"], matrix.T)
    assert result["big"].dtype == np.dtype("<i4")
    np.testing.assert_array_equal(result["big"], big)


def test_64_mib_tensor_is_cut_into_4_mib_chunks() -> None:
    array = np.random.default_rng(1).integers(0, 2**31, size=16 * MiB, dtype=np.int32)
    chunks = list(iter_chunks({"big": array}, chunk_bytes=4 * MiB))
    assert len(chunks) == 16
    assert all(len(c.data) == 4 * MiB for c in chunks)
    assert [c.offset for c in chunks] == [i * 4 * MiB for i in range(16)]
    result = assemble(chunks[::-1])
    assert np.array_equal(result["big"], array)


def test_assembler_writes_into_one_preallocated_buffer() -> None:
    array = np.arange(10_000, dtype=np.float32).reshape(100, 100)
    assembler = TensorAssembler()
    completed = None
    for chunk in iter_chunks({"w": array}, chunk_bytes=1024):
        completed = assembler.feed(chunk) or completed
    assert completed is not None
    _, tensor = completed
    # The tensor is the one array of exactly its size that the assembler allocated
    # when the first chunk came: no join of chunk bytes, no copy at the end.
    assert tensor.base is None and tensor.flags.owndata
    assert tensor.dtype == array.dtype and tensor.nbytes == array.nbytes
    assert assembler.finish()["w"] is tensor
    np.testing.assert_array_equal(tensor, array)


def test_assembler_receives_into_memory_the_caller_gives_up() -> None:
    previous = {"w": np.zeros((100, 100), np.float32), "b": np.zeros(3, np.float64)}
    kept = previous["w"]
    model = {"w": np.arange(10_000, dtype=np.float32).reshape(100, 100), "b": np.ones(3, np.int8)}
    assembler = TensorAssembler(reuse=previous)
    for chunk in iter_chunks(model, chunk_bytes=1024):
        assembler.feed(chunk)
    received = assembler.finish()
    assert received["w"] is kept  # same dtype and shape: its memory is reused
    assert received["b"].dtype == np.int8  # different dtype: new memory
    for name, tensor in model.items():
        np.testing.assert_array_equal(received[name], tensor)


def test_feed_returns_each_tensor_when_its_last_chunk_arrives() -> None:
    model: dict[str, NDArray[Any]] = {
        "a": np.arange(4, dtype=np.int16),
        "b": np.ones(3, dtype=np.uint8),
    }
    assembler = TensorAssembler()
    returned = [assembler.feed(c) for c in iter_chunks(model, chunk_bytes=4)]
    assert [r[0] if r else None for r in returned] == [None, "a", "b"]


def chunk(**changes: Any) -> Chunk:
    fields: dict[str, Any] = {
        "name": "w",
        "dtype": "float32",
        "shape": (4,),
        "offset": 0,
        "total_bytes": 16,
        "data": b"\0" * 8,
    }
    fields.update(changes)
    return Chunk(**fields)


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (chunk(offset=8, dtype="int32"), "earlier chunks said float32"),
        (chunk(offset=8, shape=(2, 2)), "earlier chunks said float32"),
        (chunk(offset=8, total_bytes=32, shape=(8,)), "earlier chunks said"),
        (chunk(offset=12), r"bytes \[12, 20\) fall outside its 16 bytes"),
        (chunk(offset=4), r"bytes \[4, 12\) were already received"),
        (chunk(offset=0), r"bytes \[0, 8\) were already received"),
        (chunk(offset=-4), "fall outside"),
        (chunk(offset=8, data=b""), "empty chunk"),
    ],
)
def test_inconsistent_chunks_are_refused(second: Chunk, message: str) -> None:
    assembler = TensorAssembler()
    assembler.feed(chunk())
    with pytest.raises(CodecError, match=message):
        assembler.feed(second)


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (chunk(total_bytes=12), "total_bytes 12 does not match float32"),
        (chunk(dtype="complex64"), "unsupported dtype"),
        (chunk(shape=(-4,), total_bytes=16), "invalid shape"),
    ],
)
def test_bad_first_chunk_is_refused(first: Chunk, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        TensorAssembler().feed(first)


def test_a_name_repeated_after_completion_is_refused() -> None:
    assembler = TensorAssembler()
    assembler.feed(chunk())
    assert assembler.feed(chunk(offset=8)) is not None
    with pytest.raises(CodecError, match="after the tensor was complete"):
        assembler.feed(chunk())


def test_finish_names_every_incomplete_tensor() -> None:
    assembler = TensorAssembler()
    assembler.feed(chunk(name="a"))
    assembler.feed(chunk(name="b", offset=8))
    assert assembler.incomplete == ["a", "b"]
    with pytest.raises(CodecError, match=r"'a' \(8 of 16 bytes\), 'b' \(8 of 16 bytes\)"):
        assembler.finish()


def test_expected_refuses_unknown_names_and_wrong_specs_before_buffering() -> None:
    reference = {"w": np.zeros(4, dtype=np.float32)}
    expected = {name: spec_of(array) for name, array in reference.items()}
    assembler = TensorAssembler(expected)
    with pytest.raises(CodecError, match="unknown tensor 'x'"):
        assembler.feed(chunk(name="x"))
    with pytest.raises(CodecError, match=r"got int32\[4\], expected float32\[4\]"):
        assembler.feed(chunk(dtype="int32"))
    with pytest.raises(CodecError, match=r"got float32\[2, 2\], expected float32\[4\]"):
        assembler.feed(chunk(shape=(2, 2)))
    assert assembler.incomplete == []
    assembler.feed(chunk())
    assert assembler.feed(chunk(offset=8)) is not None


def test_max_bytes_bounds_what_the_assembler_allocates() -> None:
    assembler = TensorAssembler(max_bytes=20)
    assembler.feed(chunk(name="a"))
    with pytest.raises(CodecError, match="would exceed the limit of 20 bytes"):
        assembler.feed(chunk(name="b"))


def _rss_now() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for memory")
@pytest.mark.skipif(available_ram() < 8 << 30, reason="needs 8 GiB of available RAM")
def test_tensor_over_2_gib_round_trips_with_at_most_two_copies() -> None:
    size = int(2.1 * (1 << 30))
    # A byte pattern with a period (251) that no chunk size divides, so a chunk
    # placed at the wrong offset would be caught.
    period = np.arange(251, dtype=np.uint8)
    block = np.tile(period, (8 * MiB) // 251 + 1)[: (8 * MiB) // 251 * 251]
    source = np.empty(size, dtype=np.uint8)
    for start in range(0, size, block.size):
        piece = source[start : start + block.size]
        piece[:] = block[: piece.size]

    rss_before = _rss_now()
    assembler = TensorAssembler()
    chunks = 0
    for part in iter_chunks({"huge": source}, chunk_bytes=4 * MiB):
        assembler.feed(part)
        chunks += 1
    result = assembler.finish()["huge"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

    assert chunks == -(-size // (4 * MiB))
    assert result.shape == (size,) and result.dtype == np.uint8
    # Source + the one assembled buffer, plus slack for the interpreter: no third copy.
    assert peak - rss_before < 1.25 * size
    for start in range(0, size, block.size):
        assert np.array_equal(
            result[start : start + block.size], source[start : start + block.size]
        )


# --- torch state dicts ------------------------------------------------------------


class SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.bn = torch.nn.BatchNorm1d(3)
        self.head = torch.nn.Linear(3, 2).to(torch.bfloat16)


def trained_net(seed: int) -> SmallNet:
    torch.manual_seed(seed)
    net = SmallNet()
    net.train()
    net.bn(torch.randn(8, 3))  # moves running stats and num_batches_tracked
    return net


def test_torch_state_dict_round_trips_through_the_codec_bit_exact() -> None:
    from fx.tensors.torch_bridge import load_into_module, state_dict_to_numpy

    source = trained_net(seed=1)
    arrays = state_dict_to_numpy(source.state_dict())
    assert arrays["bn.num_batches_tracked"].dtype == np.int64
    assert int(arrays["bn.num_batches_tracked"]) == 1
    assert arrays["head.weight"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert arrays["fc.weight"].dtype == np.float32

    received = assemble(list(iter_chunks(arrays, chunk_bytes=5)))
    target = trained_net(seed=2)
    load_into_module(target, received)

    for name, tensor in source.state_dict().items():
        loaded = target.state_dict()[name]
        assert loaded.dtype == tensor.dtype, name
        assert torch.equal(loaded, tensor), name


def test_state_dict_to_numpy_copies_so_training_cannot_change_the_arrays() -> None:
    from fx.tensors.torch_bridge import state_dict_to_numpy

    net = trained_net(seed=1)
    arrays = state_dict_to_numpy(net.state_dict())
    before = arrays["fc.weight"].copy()
    with torch.no_grad():
        net.fc.weight.add_(1.0)
    np.testing.assert_array_equal(arrays["fc.weight"], before)


def test_numpy_to_state_dict_preserves_dtypes_and_accepts_read_only_arrays() -> None:
    from fx.tensors.torch_bridge import numpy_to_state_dict

    read_only = np.frombuffer(np.arange(3, dtype=np.float16).tobytes(), dtype=np.float16)
    tensors = numpy_to_state_dict(
        {
            "h": read_only,
            "b": np.array([1.5, -3.0], dtype=ml_dtypes.bfloat16),
            "n": np.array(5, dtype=np.int64),
            "m": np.array([True, False]),
        }
    )
    assert tensors["h"].dtype == torch.float16 and tensors["h"].tolist() == [0.0, 1.0, 2.0]
    assert tensors["b"].dtype == torch.bfloat16 and tensors["b"].tolist() == [1.5, -3.0]
    assert tensors["n"].dtype == torch.int64 and tensors["n"].shape == ()
    assert tensors["m"].dtype == torch.bool


def test_load_into_module_is_strict_and_leaves_the_module_unchanged_on_error() -> None:
    from fx.tensors.torch_bridge import load_into_module, state_dict_to_numpy

    net = trained_net(seed=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    arrays = state_dict_to_numpy(trained_net(seed=2).state_dict())
    arrays["fc.weight"] = arrays["fc.weight"].astype(np.float64)
    del arrays["bn.running_mean"]
    arrays["extra"] = np.zeros(1, np.float32)
    with pytest.raises(CodecError) as caught:
        load_into_module(net, arrays)
    message = str(caught.value)
    assert "missing tensor 'bn.running_mean'" in message
    assert "unexpected tensor 'extra'" in message
    assert "'fc.weight': got float64[3, 4], the module has float32[3, 4]" in message
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_unsupported_torch_dtype_is_refused_by_name() -> None:
    from fx.tensors.torch_bridge import state_dict_to_numpy

    with pytest.raises(CodecError, match=r"'z' has dtype torch\.complex64"):
        state_dict_to_numpy({"z": torch.zeros(2, dtype=torch.complex64)})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_into_module_keeps_parameters_on_their_device() -> None:
    from fx.tensors.torch_bridge import load_into_module, state_dict_to_numpy

    source = trained_net(seed=1)
    target = trained_net(seed=2).cuda()
    load_into_module(target, state_dict_to_numpy(source.state_dict()))
    for name, tensor in target.state_dict().items():
        assert tensor.is_cuda, name
        assert torch.equal(tensor.cpu(), source.state_dict()[name]), name
