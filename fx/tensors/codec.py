"""Named tensors <-> chunks of bytes, with no size limit and no dtype change.

A model is a ``dict[str, np.ndarray]``. To move it, :func:`iter_chunks` cuts
each tensor's little-endian C-order bytes into :class:`Chunk` s of at most
``chunk_bytes`` (zero-copy: each chunk's ``data`` is a memoryview into the
array). The receiver feeds them, in any order, to a :class:`TensorAssembler`,
which copies each chunk once into a buffer preallocated for its tensor and
hands the tensor back as soon as its last byte arrives. A tensor of any size
(including one over 2 GiB) is just more chunks.
"""

from __future__ import annotations

import bisect
import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from fx.tensors.dtypes import dtype_from_name, dtype_name
from fx.tensors.errors import CodecError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "Chunk",
    "CodecError",
    "TensorAssembler",
    "TensorReceiver",
    "TensorSpec",
    "iter_chunks",
    "spec_of",
    "tensor_bytes",
]

#: Default chunk payload (4 MiB): per-message overhead is negligible at this size. gRPC's
#: default receive cap is also 4 MiB *including* the message's other fields, so a
#: transport using this size must raise its cap a little (or pass a smaller size).
DEFAULT_CHUNK_BYTES = 4 << 20


class TensorSpec(NamedTuple):
    """What a tensor must look like: its dtype name and shape."""

    dtype: str
    shape: tuple[int, ...]


def spec_of(array: NDArray[Any]) -> TensorSpec:
    """The :class:`TensorSpec` of ``array`` (:class:`CodecError` for an unsupported dtype)."""
    return TensorSpec(dtype_name(array.dtype), tuple(int(n) for n in array.shape))


@dataclass(frozen=True, slots=True)
class Chunk:
    """One slice of one tensor's bytes, with everything needed to place it.

    ``offset`` and ``total_bytes`` count bytes of the tensor's little-endian,
    C-order buffer; ``total_bytes == prod(shape) * itemsize``.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    total_bytes: int
    data: bytes | memoryview


def tensor_bytes(array: NDArray[Any]) -> memoryview:
    """The little-endian C-order bytes of ``array`` as a flat ``uint8`` memoryview.

    Zero-copy for a C-contiguous native little-endian array (the usual case);
    anything else is copied once into that layout.
    """
    big_endian = array.dtype.byteorder == ">" or (
        array.dtype.byteorder == "=" and sys.byteorder == "big"
    )
    if big_endian:
        array = array.astype(array.dtype.newbyteorder("<"), order="C")
    elif not array.flags.c_contiguous:
        # np.ascontiguousarray would turn a 0-d array into a 1-d one.
        array = array.copy(order="C")
    return array.reshape(-1).view(np.uint8).data


def iter_chunks(
    tensors: Mapping[str, NDArray[Any]], chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[Chunk]:
    """Cut every tensor into chunks of at most ``chunk_bytes``, in order.

    Each chunk's ``data`` is a memoryview into the tensor (or into one
    contiguous copy of it, if it was not C-contiguous): do not modify the
    tensors while the chunks are in use. An empty tensor yields one chunk with
    empty data, so the receiver still learns its name, dtype and shape.
    """
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    for name, array in tensors.items():
        if not isinstance(name, str):
            raise CodecError(f"tensor names must be strings, got {name!r}")
        spec = spec_of(array)
        data = tensor_bytes(array)
        total = data.nbytes
        if total == 0:
            yield Chunk(name, spec.dtype, spec.shape, 0, 0, data)
            continue
        for offset in range(0, total, chunk_bytes):
            piece = data[offset : offset + chunk_bytes]
            yield Chunk(name, spec.dtype, spec.shape, offset, total, piece)


class PendingTensor:
    """A tensor whose bytes are still arriving."""

    __slots__ = ("dtype", "received", "shape", "spans", "total_bytes")

    def __init__(self, dtype: str, shape: tuple[int, ...], total_bytes: int) -> None:
        self.dtype = dtype
        self.shape = shape
        self.total_bytes = total_bytes
        self.received = 0
        # Sorted, disjoint, non-adjacent [start, end) byte ranges received so far.
        # In-order delivery keeps this at one element.
        self.spans: list[list[int]] = []

    def claim(self, start: int, end: int) -> bool:
        """Record [start, end) as received; False if any of it was already received."""
        spans = self.spans
        i = bisect.bisect_right(spans, start, key=lambda span: span[0])
        if i > 0 and spans[i - 1][1] > start:
            return False
        if i < len(spans) and spans[i][0] < end:
            return False
        joins_left = i > 0 and spans[i - 1][1] == start
        joins_right = i < len(spans) and spans[i][0] == end
        if joins_left and joins_right:
            spans[i - 1][1] = spans[i][1]
            del spans[i]
        elif joins_left:
            spans[i - 1][1] = end
        elif joins_right:
            spans[i][0] = start
        else:
            spans.insert(i, [start, end])
        self.received += end - start
        return True


class TensorReceiver:
    """What every receiver of chunks checks, whatever it stores the bytes in.

    Subclasses provide the storage: :meth:`_begin` when a tensor's first chunk
    arrives, :meth:`_write` for each chunk's bytes (each byte range exactly
    once), :meth:`_complete` when its last byte has arrived.
    :class:`TensorAssembler` keeps tensors in memory;
    :class:`fx.tensors.staging.UpdateStager` in a file.
    """

    def __init__(
        self,
        expected: Mapping[str, tuple[str, tuple[int, ...]]] | None = None,
        *,
        max_bytes: int | None = None,
    ) -> None:
        self._expected: dict[str, TensorSpec] | None = None
        if expected is not None:
            self._expected = {
                name: TensorSpec(dtype, tuple(shape)) for name, (dtype, shape) in expected.items()
            }
        self._max_bytes = max_bytes
        self._allocated = 0
        self._pending: dict[str, PendingTensor] = {}
        self._complete_names: set[str] = set()

    def _place(self, chunk: Chunk) -> bool:
        """Check ``chunk`` and store its bytes; True if it completed its tensor."""
        name = chunk.name
        pending = self._pending.get(name)
        if pending is None:
            if name in self._complete_names:
                raise CodecError(f"tensor {name!r}: chunk received after the tensor was complete")
            pending = self._start(chunk)
        elif (chunk.dtype, tuple(chunk.shape), chunk.total_bytes) != (
            pending.dtype,
            pending.shape,
            pending.total_bytes,
        ):
            raise CodecError(
                f"tensor {name!r}: chunk says {chunk.dtype}{list(chunk.shape)} "
                f"({chunk.total_bytes} bytes), earlier chunks said "
                f"{pending.dtype}{list(pending.shape)} ({pending.total_bytes} bytes)"
            )

        data = memoryview(chunk.data).cast("B")
        size = data.nbytes
        start, end = chunk.offset, chunk.offset + size
        if start < 0 or end > pending.total_bytes:
            raise CodecError(
                f"tensor {name!r}: chunk bytes [{start}, {end}) fall outside "
                f"its {pending.total_bytes} bytes"
            )
        if size == 0 and pending.total_bytes != 0:
            raise CodecError(f"tensor {name!r}: empty chunk for a non-empty tensor")
        if not pending.claim(start, end):
            raise CodecError(f"tensor {name!r}: chunk bytes [{start}, {end}) were already received")
        if size:
            self._write(name, pending, start, data)

        if pending.received < pending.total_bytes:
            return False
        del self._pending[name]
        self._complete_names.add(name)
        self._complete(name, pending)
        return True

    def _start(self, chunk: Chunk) -> PendingTensor:
        name, shape = chunk.name, tuple(chunk.shape)
        if not isinstance(name, str):
            raise CodecError(f"tensor names must be strings, got {name!r}")
        if self._expected is not None:
            want = self._expected.get(name)
            if want is None:
                raise CodecError(f"unknown tensor {name!r}: it is not part of the model")
            if (chunk.dtype, shape) != want:
                raise CodecError(
                    f"tensor {name!r}: got {chunk.dtype}{list(shape)}, "
                    f"expected {want.dtype}{list(want.shape)}"
                )
        itemsize = dtype_from_name(chunk.dtype).itemsize
        if not all(isinstance(n, int) and n >= 0 for n in shape):
            raise CodecError(f"tensor {name!r}: invalid shape {list(shape)}")
        if chunk.total_bytes != math.prod(shape) * itemsize:
            raise CodecError(
                f"tensor {name!r}: total_bytes {chunk.total_bytes} does not match "
                f"{chunk.dtype}{list(shape)} ({math.prod(shape) * itemsize} bytes)"
            )
        if self._max_bytes is not None and self._allocated + chunk.total_bytes > self._max_bytes:
            raise CodecError(
                f"tensor {name!r}: {chunk.total_bytes} more bytes would exceed "
                f"the limit of {self._max_bytes} bytes"
            )
        pending = PendingTensor(chunk.dtype, shape, chunk.total_bytes)
        self._begin(name, pending)
        self._allocated += chunk.total_bytes
        self._pending[name] = pending
        return pending

    def _check_complete(self) -> None:
        """:class:`CodecError` naming every tensor that is still missing bytes."""
        if self._pending:
            detail = ", ".join(
                f"{name!r} ({p.received} of {p.total_bytes} bytes)"
                for name, p in self._pending.items()
            )
            raise CodecError(f"incomplete tensors: {detail}")

    @property
    def incomplete(self) -> list[str]:
        """Names of tensors that have started but not finished arriving."""
        return list(self._pending)

    # -- storage -----------------------------------------------------------------

    def _begin(self, name: str, pending: PendingTensor) -> None:
        raise NotImplementedError

    def _write(self, name: str, pending: PendingTensor, start: int, data: memoryview) -> None:
        raise NotImplementedError

    def _complete(self, name: str, pending: PendingTensor) -> None:
        raise NotImplementedError


class TensorAssembler(TensorReceiver):
    """Rebuilds tensors from chunks arriving in any order, one copy per byte.

    Each tensor gets its array (``np.empty`` of its dtype and shape) when its
    first chunk arrives; every chunk is copied straight into that array's bytes,
    and the finished tensor is the array itself (it owns its memory).

    ``expected`` (name -> (dtype name, shape)) refuses unknown names and wrong
    dtypes or shapes at the first chunk, before any buffer is allocated; use it
    whenever the receiver knows the model (e.g. the aggregator). ``max_bytes``
    bounds the total size of all buffers. ``reuse`` (name -> array) gives up
    arrays the caller no longer needs (the previous download): a tensor of the
    same dtype and shape is received into that memory instead of new memory,
    which would have to be faulted in and zeroed first. Every inconsistency
    raises :class:`CodecError`. Tensors that never sent a chunk are not an
    error here: compare the result with the reference (see :mod:`fx.tensors.checks`).
    """

    def __init__(
        self,
        expected: Mapping[str, tuple[str, tuple[int, ...]]] | None = None,
        *,
        max_bytes: int | None = None,
        reuse: Mapping[str, NDArray[Any]] | None = None,
    ) -> None:
        super().__init__(expected, max_bytes=max_bytes)
        self._reuse = dict(reuse or {})
        self._bytes: dict[str, memoryview] = {}  # each pending tensor's bytes, writable
        # Every name seen, in order of its first chunk; None until complete.
        self._tensors: dict[str, NDArray[Any] | None] = {}
        self._arrays: dict[str, NDArray[Any]] = {}

    def feed(self, chunk: Chunk) -> tuple[str, NDArray[Any]] | None:
        """Place ``chunk``; return ``(name, tensor)`` if it completed its tensor."""
        if not self._place(chunk):
            return None
        tensor = self._tensors[chunk.name]
        assert tensor is not None
        return chunk.name, tensor

    def finish(self) -> dict[str, NDArray[Any]]:
        """All completed tensors, in order of their first chunk.

        :class:`CodecError` naming every tensor that is still missing bytes.
        """
        self._check_complete()
        return {name: tensor for name, tensor in self._tensors.items() if tensor is not None}

    def _begin(self, name: str, pending: PendingTensor) -> None:
        dtype = dtype_from_name(pending.dtype)
        array = self._reuse.pop(name, None)
        if not (
            array is not None
            and array.dtype == dtype
            and array.shape == pending.shape
            and array.flags.c_contiguous
            and array.flags.writeable
        ):
            array = np.empty(pending.shape, dtype=dtype)
        self._arrays[name] = array
        self._bytes[name] = array.reshape(-1).view(np.uint8).data
        self._tensors[name] = None

    def _write(self, name: str, pending: PendingTensor, start: int, data: memoryview) -> None:
        self._bytes[name][start : start + data.nbytes] = data

    def _complete(self, name: str, pending: PendingTensor) -> None:
        del self._bytes[name]
        self._tensors[name] = self._arrays.pop(name)
