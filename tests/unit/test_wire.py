"""Chunk framing on the wire: the same bytes protobuf writes, the payload never copied."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
from numpy.typing import NDArray

from fx.tensors.codec import Chunk, CodecError, iter_chunks
from fx.transport.grpc import converters, wire
from fx.transport.grpc.protos import aggregator_pb2 as pb


def _model() -> dict[str, NDArray[Any]]:
    return {
        "w": np.arange(3000, dtype=np.float32).reshape(30, 100),
        "b": np.arange(7, dtype=ml_dtypes.bfloat16),
        "step": np.array(2**40, dtype=np.int64),
        "empty": np.zeros((0, 4), dtype=np.float16),
    }


def test_encoding_is_byte_identical_to_protobuf() -> None:
    for chunk in iter_chunks(_model(), 1000):
        proto = converters.chunk_to_proto(chunk)
        assert (
            wire.model_chunk_to_wire(chunk, round=300, model_uuid="m-1")
            == pb.ModelChunk(round=300, model_uuid="m-1", chunk=proto).SerializeToString()
        )
        assert wire.result_part_to_wire(pb.TaskResultPart(), chunk) == (
            pb.TaskResultPart(chunk=proto).SerializeToString()
        )


def test_decoding_hands_out_a_view_of_the_received_message() -> None:
    chunk = next(iter_chunks({"w": np.arange(1000, dtype=np.float64)}, 4096))
    raw = wire.model_chunk_to_wire(chunk, round=2, model_uuid="m-2")
    round_, model_uuid, decoded = wire.model_chunk_from_wire(raw)
    assert (round_, model_uuid) == (2, "m-2")
    assert (decoded.name, decoded.dtype, decoded.shape) == ("w", "float64", (1000,))
    assert (decoded.offset, decoded.total_bytes) == (0, 8000)
    assert isinstance(decoded.data, memoryview) and decoded.data.obj is raw  # no copy
    assert bytes(decoded.data) == bytes(chunk.data)


def test_result_parts_carry_their_header_and_an_optional_chunk() -> None:
    header = pb.TaskResultPart(
        round=4,
        task="train",
        sample_count=12,
        metrics=[pb.Metric(name="loss", value=0.5)],
        has_tensors=True,
    )
    fields, chunk = wire.result_part_from_wire(wire.result_part_to_wire(header))
    assert chunk is None and fields == header
    data_chunk = Chunk("w", "int8", (3,), 0, 3, b"\x01\x02\x03")
    fields, chunk = wire.result_part_from_wire(wire.result_part_to_wire(header, data_chunk))
    assert fields == header and chunk is not None and bytes(chunk.data) == b"\x01\x02\x03"


def test_messages_outside_the_fast_path_still_parse_as_protobuf_would() -> None:
    # Two occurrences of the chunk field: protobuf merges them.
    raw = (
        pb.ModelChunk(round=1, chunk=pb.TensorChunk(name="a", total_bytes=3)).SerializeToString()
        + pb.ModelChunk(chunk=pb.TensorChunk(data=b"xyz")).SerializeToString()
    )
    _, _, chunk = wire.model_chunk_from_wire(raw)
    assert (chunk.name, chunk.total_bytes, bytes(chunk.data)) == ("a", 3, b"xyz")


@pytest.mark.parametrize("raw", [b"\x1a\x10abc", b"\xff", b"\x1b"])
def test_a_malformed_message_is_a_codec_error(raw: bytes) -> None:
    with pytest.raises(CodecError, match="malformed"):
        wire.model_chunk_from_wire(raw)
