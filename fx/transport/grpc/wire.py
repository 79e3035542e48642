"""Tensor chunks <-> serialized messages, copying a chunk's payload at most once.

The generated protobuf classes copy a chunk's payload at every step: building a
``TensorChunk`` copies the bytes in, ``SerializeToString`` copies them out,
parsing copies them again and reading ``.data`` once more. For a 100 MB model
that is several hundred megabytes of memcpy per transfer, on the round's
critical path. Here instead:

- encoding serializes only the small fields with protobuf and joins them with
  the payload: one copy, into the message gRPC sends;
- decoding locates the payload inside the received message and hands it on as
  a ``memoryview`` of it (no copy); the small fields are parsed by protobuf.

Encoded messages are byte for byte what ``SerializeToString`` produces (fields
in number order), so either end may use the generated classes instead. A
message this decoder does not expect (a repeated payload field, for one) is
parsed by protobuf as a whole: same result, more copies.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError

from fx.tensors.codec import Chunk, CodecError
from fx.transport.grpc.protos import aggregator_pb2 as pb

__all__ = [
    "model_chunk_from_wire",
    "model_chunk_to_wire",
    "result_part_from_wire",
    "result_part_to_wire",
]

_LEN = 2  # wire type of length-delimited fields
_MODEL_CHUNK = pb.ModelChunk.DESCRIPTOR.fields_by_name["chunk"].number
_RESULT_CHUNK = pb.TaskResultPart.DESCRIPTOR.fields_by_name["chunk"].number
_DATA = pb.TensorChunk.DESCRIPTOR.fields_by_name["data"].number


class _Unexpected(Exception):
    """Not the layout the fast path handles: let protobuf parse the whole message."""


def model_chunk_to_wire(chunk: Chunk, *, round: int, model_uuid: str) -> bytes:
    """A serialized ``ModelChunk`` carrying ``chunk``."""
    head = pb.ModelChunk(round=round, model_uuid=model_uuid).SerializeToString()
    return b"".join([head, *_chunk_field(_MODEL_CHUNK, chunk)])


def model_chunk_from_wire(raw: bytes) -> tuple[int, str, Chunk]:
    """(round, model uuid, chunk) of a serialized ``ModelChunk``; the chunk's data is a
    view of ``raw``. :class:`CodecError` if ``raw`` is malformed."""
    try:
        head, meta, data = _split(raw, _MODEL_CHUNK)
    except _Unexpected:
        message = _parse(pb.ModelChunk, raw)
        return message.round, message.model_uuid, _chunk(message.chunk, message.chunk.data)
    message = _parse(pb.ModelChunk, head)
    tensor = pb.TensorChunk() if meta is None else _parse(pb.TensorChunk, meta)
    return message.round, message.model_uuid, _chunk(tensor, data)


def result_part_to_wire(part: pb.TaskResultPart, chunk: Chunk | None = None) -> bytes:
    """A serialized ``TaskResultPart``: ``part``'s fields plus ``chunk`` (which replaces
    any chunk set on ``part``)."""
    if chunk is None:
        return bytes(part.SerializeToString())
    if part.HasField("chunk"):
        fields = pb.TaskResultPart()
        fields.CopyFrom(part)
        fields.ClearField("chunk")
        part = fields
    return b"".join([part.SerializeToString(), *_chunk_field(_RESULT_CHUNK, chunk)])


def result_part_from_wire(raw: bytes) -> tuple[pb.TaskResultPart, Chunk | None]:
    """The fields of a serialized ``TaskResultPart`` (its ``chunk`` cleared) and the chunk
    it carries, if any, whose data is a view of ``raw``. :class:`CodecError` if malformed."""
    try:
        head, meta, data = _split(raw, _RESULT_CHUNK)
    except _Unexpected:
        message = _parse(pb.TaskResultPart, raw)
        chunk = _chunk(message.chunk, message.chunk.data) if message.HasField("chunk") else None
        message.ClearField("chunk")
        return message, chunk
    message = _parse(pb.TaskResultPart, head)
    if meta is None:
        return message, None
    return message, _chunk(_parse(pb.TensorChunk, meta), data)


def _parse(message_class: Any, raw: bytes) -> Any:
    try:
        return message_class.FromString(raw)
    except DecodeError as exc:
        raise CodecError(f"malformed {message_class.__name__} message: {exc}") from None


def _chunk(meta: pb.TensorChunk, data: bytes | memoryview) -> Chunk:
    return Chunk(
        name=meta.name,
        dtype=meta.dtype,
        shape=tuple(meta.shape),
        offset=meta.offset,
        total_bytes=meta.total_bytes,
        data=data,
    )


def _chunk_field(field: int, chunk: Chunk) -> list[bytes | memoryview]:
    """The pieces of field ``field`` holding ``chunk`` as a ``TensorChunk``."""
    meta = pb.TensorChunk(
        name=chunk.name,
        dtype=chunk.dtype,
        shape=list(chunk.shape),
        offset=chunk.offset,
        total_bytes=chunk.total_bytes,
    ).SerializeToString()
    data = memoryview(chunk.data).cast("B")
    # proto3 leaves an empty bytes field out; so do we, to stay byte-identical.
    data_key = _key(_DATA, data.nbytes) if data.nbytes else b""
    size = len(meta) + len(data_key) + data.nbytes
    return [_key(field, size), meta, data_key, data]


def _key(field: int, length: int) -> bytes:
    """The tag and length prefix of a length-delimited field."""
    return _varint(field << 3 | _LEN) + _varint(length)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _split(raw: bytes, field: int) -> tuple[bytes, bytes | None, memoryview]:
    """``raw`` without its one ``field`` (a TensorChunk), that TensorChunk without its
    data, and the data as a view of ``raw``. (raw, None, empty) if ``field`` is absent.

    :class:`_Unexpected` for anything else: a repeated field, a malformed message.
    """
    view = memoryview(raw)
    spans = [s for s in _fields(view, 0, len(view)) if s[0] == field]
    if not spans:
        return raw, None, view[:0]
    if len(spans) > 1 or spans[0][1] != _LEN:
        raise _Unexpected
    _, _, tag_at, start, end = spans[0]
    head = bytes(view[:tag_at]) + bytes(view[end:])
    data_spans = [s for s in _fields(view, start, end) if s[0] == _DATA]
    if not data_spans:
        return head, bytes(view[start:end]), view[:0]
    if len(data_spans) > 1 or data_spans[0][1] != _LEN:
        raise _Unexpected
    _, _, data_tag_at, data_start, data_end = data_spans[0]
    meta = bytes(view[start:data_tag_at]) + bytes(view[data_end:end])
    return head, meta, view[data_start:data_end]


def _fields(view: memoryview, pos: int, end: int) -> list[tuple[int, int, int, int, int]]:
    """(field number, wire type, tag offset, value start, value end) of each field."""
    fields = []
    while pos < end:
        tag_at = pos
        key, pos = _read_varint(view, pos, end)
        wire_type = key & 7
        if wire_type == 0:
            start = pos
            _, pos = _read_varint(view, pos, end)
        elif wire_type == 1:
            start, pos = pos, pos + 8
        elif wire_type == _LEN:
            length, start = _read_varint(view, pos, end)
            pos = start + length
        elif wire_type == 5:
            start, pos = pos, pos + 4
        else:  # groups (deprecated) and invalid wire types
            raise _Unexpected
        if pos > end:
            raise _Unexpected
        fields.append((key >> 3, wire_type, tag_at, start, pos))
    return fields


def _read_varint(view: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift < 64:
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise _Unexpected
