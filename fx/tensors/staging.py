"""Model updates received into a file instead of memory.

The aggregator receives each upload with an :class:`UpdateStager`: every chunk
is checked as it arrives (names, dtypes, shapes and byte ranges against the
model, like :class:`~fx.tensors.codec.TensorAssembler`, and float values for
NaN/Inf) and written straight to its place in an anonymous temporary file. A
finished upload is a :class:`StagedUpdate`: a read-only mapping whose tensors
are memory maps of that file, created when read. So however many uploads are
in flight, none is held in the aggregator's memory: an update is folded into
the aggregation tensor by tensor straight from the page cache, and a refused or
broken upload is simply dropped with its file. An aggregation that must keep
every update (a robust one) keeps the memory maps: the updates then stay on
disk, not in RAM. See docs/performance.md.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from fx.tensors.checks import non_finite_count
from fx.tensors.codec import Chunk, PendingTensor, TensorReceiver, TensorSpec
from fx.tensors.dtypes import dtype_from_name, is_float
from fx.tensors.errors import CodecError

__all__ = ["StagedUpdate", "UpdateStager"]

# Tensors start on this boundary in the file (page-aligned memory maps, aligned loads).
_ALIGN = 4096
# Bytes per read when a tensor must be checked after the fact (unaligned chunks).
_CHECK_BLOCK = 4 << 20


class StagedUpdate(Mapping[str, NDArray[Any]]):
    """An update whose tensors live in a file; each value is a read-only memory map.

    Every access maps the tensor afresh, so memory holds only what is being
    read; a caller that keeps a value keeps its mapping (and the file) alive.
    ``checked_finite``: every float tensor was found free of NaN and Inf.
    """

    def __init__(
        self, file: IO[bytes], layout: Mapping[str, tuple[int, TensorSpec]], *, checked_finite: bool
    ) -> None:
        self._file = file
        self._layout = dict(layout)
        self.checked_finite = checked_finite

    def __getitem__(self, name: str) -> NDArray[Any]:
        offset, spec = self._layout[name]
        if 0 in spec.shape:  # mmap cannot map nothing
            return np.empty(spec.shape, dtype=dtype_from_name(spec.dtype))
        return np.memmap(
            self._file, dtype=dtype_from_name(spec.dtype), mode="r", offset=offset, shape=spec.shape
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._layout)

    def __len__(self) -> int:
        return len(self._layout)

    def close(self) -> None:
        """Close the file; memory maps still held by callers stay valid."""
        self._file.close()


class UpdateStager(TensorReceiver):
    """Receives the chunks of one update into an anonymous file in ``directory``.

    ``expected`` is the model (name -> (dtype name, shape)): the file is laid
    out for it up front, and anything else is refused at the first chunk.
    Raises :class:`CodecError` on the first problem, NaN/Inf included; call
    :meth:`discard` then (or after :meth:`finish`'s result is no longer needed,
    :meth:`StagedUpdate.close`).
    """

    def __init__(
        self,
        expected: Mapping[str, tuple[str, tuple[int, ...]]],
        *,
        directory: Path | None = None,
    ) -> None:
        super().__init__(expected)
        self._layout: dict[str, tuple[int, TensorSpec]] = {}
        position = 0
        for name, (dtype, shape) in expected.items():
            spec = TensorSpec(dtype, tuple(shape))
            self._layout[name] = (position, spec)
            size = int(np.prod(spec.shape, dtype=np.int64)) * dtype_from_name(dtype).itemsize
            position += -(-size // _ALIGN) * _ALIGN
        # Owned by the stager, then by the StagedUpdate: closed by discard() / close().
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
        self._file.truncate(position)  # sparse: no disk blocks until written
        self._fd = self._file.fileno()
        self._order: list[str] = []  # names in order of their first chunk
        self._unchecked: set[str] = set()  # float tensors with a chunk not checked on arrival

    def feed(self, chunk: Chunk) -> None:
        """Check ``chunk`` and write it to its place in the file."""
        self._place(chunk)

    def finish(self) -> StagedUpdate:
        """The received update (tensors that never sent a chunk are absent: compare with the
        model, see :mod:`fx.tensors.checks`). :class:`CodecError` if any is incomplete."""
        self._check_complete()
        for name in sorted(self._unchecked):
            self._check_finite_on_disk(name)
        layout = {name: self._layout[name] for name in self._order}
        return StagedUpdate(self._file, layout, checked_finite=True)

    def discard(self) -> None:
        self._file.close()

    def _begin(self, name: str, pending: PendingTensor) -> None:
        self._order.append(name)

    def _write(self, name: str, pending: PendingTensor, start: int, data: memoryview) -> None:
        if is_float(pending.dtype):
            itemsize = dtype_from_name(pending.dtype).itemsize
            if start % itemsize or data.nbytes % itemsize:
                self._unchecked.add(name)  # values straddle chunks: check the whole tensor later
            else:
                values = np.frombuffer(data, dtype_from_name(pending.dtype))
                self._refuse_non_finite(name, values, start)
        offset = self._layout[name][0] + start
        while data.nbytes:
            written = os.pwrite(self._fd, data, offset)
            data, offset = data[written:], offset + written

    def _complete(self, name: str, pending: PendingTensor) -> None:
        pass

    def _check_finite_on_disk(self, name: str) -> None:
        offset, spec = self._layout[name]
        dtype = dtype_from_name(spec.dtype)
        count = int(np.prod(spec.shape, dtype=np.int64))
        step = max(1, _CHECK_BLOCK // dtype.itemsize)
        for first in range(0, count, step):
            block = os.pread(
                self._fd, min(step, count - first) * dtype.itemsize, offset + first * dtype.itemsize
            )
            self._refuse_non_finite(name, np.frombuffer(block, dtype), first * dtype.itemsize)

    @staticmethod
    def _refuse_non_finite(name: str, values: NDArray[Any], start: int) -> None:
        nan, inf = non_finite_count(values)
        if nan or inf:
            raise CodecError(
                f"tensor {name!r}: {nan} NaN and {inf} infinite values "
                f"in bytes [{start}, {start + values.nbytes})"
            )
