"""FedAvg's first update of a round, folded into the accumulators as its chunks arrive.

Every other update is staged on disk and folded once complete
(:mod:`fx.tensors.staging`): folding a later update as it arrives would need its
bytes again to undo it if it broke off or turned out bad. The first one needs
nothing to undo: the accumulators hold only it, so a failed first update is
simply forgotten. Receiving it straight into the accumulators saves writing it
to disk and reading it back, and leaves less to do after the last byte of a
round (docs/performance.md).

Chunks are checked as the stager checks them (names, dtypes, shapes and byte
ranges by :class:`~fx.tensors.codec.TensorReceiver`, float values for NaN and
Inf, integers for overflow of the exact accumulator) and may arrive in any order
and cut values anywhere: the bytes of a value split across chunks wait until
the value is whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fx.algorithms.base import FoldedUpdate
from fx.tensors.checks import non_finite_count
from fx.tensors.codec import Chunk, PendingTensor, TensorReceiver
from fx.tensors.dtypes import dtype_from_name
from fx.tensors.errors import CodecError

if TYPE_CHECKING:
    from fx.algorithms.fedavg import FedAvg, _Slot

__all__ = ["FirstUpdateReceiver"]

_INT64_MAX = int(np.iinfo(np.int64).max)


class FirstUpdateReceiver(TensorReceiver):
    """Receives one update into ``fedavg``'s accumulators with ``weight`` (see the module
    docstring). :class:`CodecError` on the first problem; then, or once the update is
    no longer wanted, :meth:`discard` (a committed update is not affected)."""

    def __init__(
        self, fedavg: FedAvg, slots: dict[str, _Slot], weight: float, int_weight: int
    ) -> None:
        super().__init__({name: slot.spec for name, slot in slots.items()})
        self._fedavg = fedavg
        self._slots = slots
        self.weight = weight
        self.int_weight = int_weight
        self.bounds: dict[str, int] = {}  # integer tensors: the largest possible |acc|
        # (tensor, element) -> the bytes of a value cut across chunks, and how many arrived.
        self._partial: dict[tuple[str, int], tuple[bytearray, int]] = {}
        self._seen: set[str] = set()

    def feed(self, chunk: Chunk) -> None:
        """Check ``chunk`` and fold its values into the accumulators."""
        self._place(chunk)

    def finish(self) -> FoldedUpdate:
        """The received update, to pass to ``FedAvg.add``. :class:`CodecError` if any
        tensor of the model is missing or incomplete."""
        self._check_complete()
        missing = [name for name in self._slots if name not in self._seen]
        if missing:
            raise CodecError("missing tensors: " + ", ".join(repr(name) for name in missing))
        return FoldedUpdate(self)

    def discard(self) -> None:
        """Forget this update unless it was committed (the accumulators then hold nothing)."""
        self._fedavg._forget_receiver(self)

    def _begin(self, name: str, pending: PendingTensor) -> None:
        self._seen.add(name)

    def _complete(self, name: str, pending: PendingTensor) -> None:
        pass

    def _write(self, name: str, pending: PendingTensor, start: int, data: memoryview) -> None:
        dtype = dtype_from_name(pending.dtype)
        size = dtype.itemsize
        end = start + data.nbytes
        first_whole, last_whole = -(-start // size), end // size  # values wholly inside
        if first_whole < last_whole:
            whole = data[first_whole * size - start : last_whole * size - start]
            self._fold(name, first_whole, np.frombuffer(whole, dtype))
        if start % size:  # the end of a value begun in another chunk (or all of this one)
            self._add_part(name, start // size, start % size, data[: first_whole * size - start])
        if end % size and last_whole >= first_whole:  # the start of a value ending elsewhere
            self._add_part(name, last_whole, 0, data[last_whole * size - start :])

    def _add_part(self, name: str, index: int, offset: int, part: memoryview) -> None:
        dtype = dtype_from_name(self._slots[name].spec.dtype)
        buffer, filled = self._partial.get((name, index), (bytearray(dtype.itemsize), 0))
        buffer[offset : offset + part.nbytes] = part
        filled += part.nbytes
        if filled < dtype.itemsize:
            self._partial[(name, index)] = (buffer, filled)
            return
        self._partial.pop((name, index), None)
        self._fold(name, index, np.frombuffer(bytes(buffer), dtype))

    def _fold(self, name: str, first: int, values: NDArray[Any]) -> None:
        """Accumulators [first, first + len(values)) = weight * values, as FedAvg.add
        would for a first update (the same operations, so the same bits)."""
        slot = self._slots[name]
        target = slot.acc.reshape(-1)[first : first + values.size]
        if slot.kind == "float":
            nan, inf = non_finite_count(values)
            if nan or inf:
                raise CodecError(
                    f"tensor {name!r}: {nan} NaN and {inf} infinite values from element {first}"
                )
            np.multiply(values, slot.acc.dtype.type(self.weight), out=target, dtype=slot.acc.dtype)
        elif slot.kind == "int":
            if values.size:
                largest = max(abs(int(values.max())), abs(int(values.min())))
                bound = largest * self.int_weight
                if bound > _INT64_MAX:
                    raise CodecError(
                        f"tensor {name!r}: the weighted sum could overflow int64 "
                        f"(values up to {largest} with weight {self.int_weight})"
                    )
                self.bounds[name] = max(self.bounds.get(name, 0), bound)
            np.multiply(values, np.int64(self.int_weight), out=target, dtype=np.int64)
        else:  # bool: the weight where True, as FedAvg.add's vote does on a zeroed tally
            np.multiply(values, float(self.weight), out=target, dtype=np.float64)
