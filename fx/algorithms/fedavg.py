"""FedAvg: the weighted mean of the updates, accumulated as they arrive.

Memory is one accumulator per tensor (O(model)), whatever the number of
updates, and each :meth:`FedAvg.add` is one pass over the update with no
full-size temporary: ``acc += weight * update`` runs block by block through a
small, cache-resident scratch buffer.

Per dtype:

- float32 / float16 / bfloat16 accumulate in float32, float64 in float64; the
  mean is cast back to the input dtype (round to nearest even).
- integers are averaged exactly, in integer arithmetic: an int64 accumulator
  of ``weight * value`` (weights must then be integers, e.g. sample counts),
  divided by the total weight with round-half-to-even, cast back. An update
  that could overflow the int64 accumulator is refused, never wrapped.
- bool is a weighted majority vote; a tie keeps the reference value.

Results have exactly the reference's names, dtypes and shapes.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fx.algorithms.base import FoldedUpdate
from fx.algorithms.fold_on_arrival import FirstUpdateReceiver
from fx.tensors.checks import find_update_problems
from fx.tensors.codec import TensorSpec, spec_of
from fx.tensors.dtypes import dtype_from_name, is_float, is_integer
from fx.tensors.pages import release_pages

__all__ = ["FedAvg"]

# Elements per block of the multiply-add: large enough to amortize the per-call
# cost of numpy, small enough for the scratch block to stay in cache.
_BLOCK = 1 << 16
_INT64_MAX = int(np.iinfo(np.int64).max)
# Elements folded between releases of a staged (memory-mapped) update's pages: the
# mapped pages count in the aggregator's RSS until released (fx/tensors/staging.py).
_RELEASE_BLOCKS = 16


class _Slot:
    """The running state of one tensor."""

    __slots__ = ("acc", "bound", "kind", "reference", "spec")

    def __init__(self, spec: TensorSpec, reference: NDArray[Any]) -> None:
        self.spec = spec
        # Largest possible |acc| so far (integers only), as an exact Python int.
        self.bound = 0
        self.reference: NDArray[Any] | None = None
        # Float and integer accumulators are overwritten by the first update, so they
        # are only provided then (recycled memory where there is some): until then the
        # accumulator is an empty placeholder of the right dtype.
        if is_float(spec.dtype):
            self.kind = "float"
            acc_dtype = np.float64 if spec.dtype == "float64" else np.float32
            self.acc: NDArray[Any] = np.empty(0, dtype=acc_dtype)
        elif is_integer(spec.dtype):
            self.kind = "int"
            self.acc = np.empty(0, dtype=np.int64)
        else:
            self.kind = "bool"
            # Weight voting True; a tie keeps the reference, so keep a copy of it.
            self.acc = np.zeros(spec.shape, dtype=np.float64)
            self.reference = np.array(reference, dtype=np.bool_, copy=True)


class FedAvg:
    """Streaming weighted average of model updates (see the module docstring).

    Conforms to :class:`fx.algorithms.base.Aggregation`. :meth:`add` reads the
    update and never modifies it.
    """

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] | None = None
        self._specs: dict[str, TensorSpec] = {}
        self._count = 0
        self._total_weight = 0.0
        self._total_int_weight = 0
        self._has_exact = False
        self._scratch: dict[np.dtype[Any], NDArray[Any]] = {}
        # take_result() hands out accumulators as the new model; once nobody else holds
        # them, a model handed out earlier becomes an accumulator again: rounds reuse
        # one or two buffers instead of allocating (and faulting in) a model each.
        self._handed_out: dict[str, NDArray[Any]] = {}
        self._spares: dict[str, NDArray[Any]] = {}
        self._receiving: FirstUpdateReceiver | None = None  # the round's first, arriving

    @property
    def count(self) -> int:
        """How many updates were added since the last :meth:`reset`."""
        return self._count

    @property
    def total_weight(self) -> float:
        """The sum of the weights added since the last :meth:`reset`."""
        return self._total_weight

    def reset(self, reference: Mapping[str, NDArray[Any]]) -> None:
        """Start a new round for models shaped like ``reference``."""
        self._specs = {name: spec_of(array) for name, array in reference.items()}
        self._slots = {name: _Slot(self._specs[name], array) for name, array in reference.items()}
        self._has_exact = any(slot.kind == "int" for slot in self._slots.values())
        self._count = 0
        self._total_weight = 0.0
        self._total_int_weight = 0
        self._receiving = None  # a receiver of the last round folds into its own slots

    def receive_first(self, weight: float) -> FirstUpdateReceiver | None:
        """A receiver folding the round's first update into the accumulators as its
        chunks arrive (see :mod:`fx.algorithms.fold_on_arrival`); None if the round
        already has an update or is receiving one, or ``weight`` is invalid (then
        receive it otherwise, and :meth:`add` says why it is refused)."""
        slots = self._require_slots()
        if self._count or self._receiving is not None:
            return None
        try:
            int_weight = self._check_weight(weight)
        except ValueError:
            return None
        self._provide_accumulators(slots)
        self._receiving = FirstUpdateReceiver(self, slots, float(weight), int_weight)
        return self._receiving

    def _forget_receiver(self, receiver: FirstUpdateReceiver) -> None:
        """``receiver``'s update will not be committed: the accumulators hold nothing."""
        if receiver is not self._receiving:
            return  # committed, or of an earlier round
        self._receiving = None
        for slot in self._require_slots().values():
            if slot.kind == "bool":
                slot.acc.fill(0.0)  # the tally starts at zero; float/int ones are overwritten

    def add(self, update: Mapping[str, NDArray[Any]], weight: float) -> None:
        """Fold ``update`` into the mean with ``weight`` (> 0; an integer if the
        model has integer tensors).

        ``ValueError`` (and no change to the state) if the weight is invalid,
        the update does not match the reference, or an integer tensor could
        overflow the accumulator.
        """
        slots = self._require_slots()
        if isinstance(update, FoldedUpdate):
            self._commit(update, weight)
            return
        if self._receiving is not None:
            raise RuntimeError("the round's first update is still arriving; add it first")
        problems = find_update_problems(self._specs, update, check_finite=False)
        if problems:
            raise ValueError("update does not match the model: " + "; ".join(problems))
        int_weight = self._check_weight(weight)

        # Check every integer bound before touching any state, so that a refused
        # update leaves the round exactly as it was.
        bounds: dict[str, int] = {}
        for name, slot in slots.items():
            if slot.kind == "int":
                array = update[name]
                largest = max(abs(int(array.max())), abs(int(array.min()))) if array.size else 0
                bounds[name] = slot.bound + largest * int_weight
                if bounds[name] > _INT64_MAX:
                    raise ValueError(
                        f"tensor {name!r}: the weighted sum could overflow int64 "
                        f"(values up to {largest} with weight {int_weight})"
                    )
        if self._has_exact and self._total_int_weight + int_weight > _INT64_MAX:
            raise ValueError(f"total weight would exceed {_INT64_MAX}")

        first = self._count == 0
        if first:
            self._provide_accumulators(slots)
        for name, slot in slots.items():
            array = update[name]
            if slot.kind == "float":
                self._multiply_add(slot.acc, array, slot.acc.dtype.type(weight), first)
            elif slot.kind == "int":
                self._multiply_add(slot.acc, array, np.int64(int_weight), first)
                slot.bound = bounds[name]
            else:
                acc = slot.acc.reshape(-1)
                np.add(acc, float(weight), out=acc, where=array.reshape(-1))
        self._count += 1
        self._total_weight += float(weight)
        self._total_int_weight += int_weight

    def _commit(self, update: FoldedUpdate, weight: float) -> None:
        """Count the update ``receive_first``'s receiver folded in as it arrived."""
        receiver = update.receiver
        if receiver is not self._receiving or self._count:
            raise ValueError("this update was not received into this round's accumulators")
        assert isinstance(receiver, FirstUpdateReceiver)
        if float(weight) != receiver.weight:
            raise ValueError(f"weight {weight!r} is not the {receiver.weight!r} it arrived with")
        slots = self._require_slots()
        for name, bound in receiver.bounds.items():
            slots[name].bound = bound
        self._receiving = None
        self._count = 1
        self._total_weight = receiver.weight
        self._total_int_weight = receiver.int_weight

    def result(self) -> dict[str, NDArray[Any]]:
        """The weighted mean of every update added since :meth:`reset`."""
        slots = self._require_slots()
        if self._count == 0:
            raise ValueError("FedAvg has no updates to average")
        return {name: self._mean(slot) for name, slot in slots.items()}

    def take_result(self) -> dict[str, NDArray[Any]]:
        """:meth:`result`, computed where it can be in the accumulators' own memory.

        float32 and float64 tensors are divided in place, so closing a round
        allocates no second model; the values are the same as :meth:`result`'s.
        The round's state is spent: call :meth:`reset` before adding again.
        """
        slots = self._require_slots()
        if self._count == 0:
            raise ValueError("FedAvg has no updates to average")
        means: dict[str, NDArray[Any]] = {}
        for name, slot in slots.items():
            if slot.kind == "float" and slot.acc.dtype == dtype_from_name(slot.spec.dtype):
                np.divide(slot.acc, slot.acc.dtype.type(self._total_weight), out=slot.acc)
                means[name] = slot.acc
            else:
                means[name] = self._mean(slot)
        self._slots = None
        self._spares, self._handed_out = (
            self._handed_out,
            {name: slot.acc for name, slot in slots.items() if means[name] is slot.acc},
        )
        return means

    def _provide_accumulators(self, slots: Mapping[str, _Slot]) -> None:
        """Give every float and integer slot its accumulator, reusing memory where it can.

        First the model handed out at the end of the last round, once its holder
        let go of it (the aggregator does once that model is encoded and on disk:
        one model in memory, not two), else the model of two rounds ago, else new
        memory. Spares left unused are dropped: at most two models' memory is kept.

        A reference count of 2 (the local name and getrefcount's argument) means no
        dict, view, memoryview or thread anywhere still refers to the array.
        """
        spares, self._spares = self._spares, {}
        for name, slot in slots.items():
            if slot.kind == "bool":
                continue
            for pool in (self._handed_out, spares):
                spare = pool.pop(name, None)
                if (
                    spare is not None
                    and spare.shape == slot.spec.shape
                    and spare.dtype == slot.acc.dtype
                    and sys.getrefcount(spare) == 2
                ):
                    slot.acc = spare
                    break
                if spare is not None and pool is self._handed_out:
                    pool[name] = spare  # still in use: it may be free by the next round
                del spare
            if slot.acc.shape != slot.spec.shape:
                slot.acc = np.empty(slot.spec.shape, dtype=slot.acc.dtype)

    def _mean(self, slot: _Slot) -> NDArray[Any]:
        out = np.empty(slot.spec.shape, dtype=dtype_from_name(slot.spec.dtype))
        if slot.kind == "float":
            np.divide(slot.acc, slot.acc.dtype.type(self._total_weight), out=out)
        elif slot.kind == "int":
            total = self._total_int_weight
            quotient, remainder = np.divmod(slot.acc, np.int64(total))
            # Round half to even, comparing r with total - r (2r could overflow).
            complement = np.int64(total) - remainder
            round_up = remainder > complement
            round_up |= (remainder == complement) & (quotient % 2 == 1)
            quotient += round_up
            out[...] = quotient
        else:
            doubled = slot.acc * 2.0
            assert slot.reference is not None
            np.greater(doubled, self._total_weight, out=out)
            tie = doubled == self._total_weight
            out[tie] = slot.reference[tie]
        return out

    def _multiply_add(
        self, acc: NDArray[Any], array: NDArray[Any], weight: np.generic, first: bool
    ) -> None:
        """``acc += weight * array`` (``acc = ...`` if ``first``), with no full-size temporary."""
        flat_acc = acc.reshape(-1)
        flat = array.reshape(-1)
        mapped = isinstance(array, np.memmap)
        if first and not mapped:
            np.multiply(flat, weight, out=flat_acc, dtype=acc.dtype)
            return
        if first:  # a staged update: in pieces, each released once read
            step = _BLOCK * _RELEASE_BLOCKS
            for start in range(0, flat.size, step):
                stop = min(start + step, flat.size)
                np.multiply(flat[start:stop], weight, out=flat_acc[start:stop], dtype=acc.dtype)
                release_pages(array, start * array.itemsize, stop * array.itemsize)
            return
        scratch = self._scratch.get(acc.dtype)
        if scratch is None:
            scratch = self._scratch[acc.dtype] = np.empty(_BLOCK, dtype=acc.dtype)
        released = 0
        for start in range(0, flat.size, _BLOCK):
            stop = min(start + _BLOCK, flat.size)
            part = scratch[: stop - start]
            np.multiply(flat[start:stop], weight, out=part, dtype=acc.dtype)
            np.add(flat_acc[start:stop], part, out=flat_acc[start:stop])
            if mapped and (stop - released >= _BLOCK * _RELEASE_BLOCKS or stop == flat.size):
                release_pages(array, released * array.itemsize, stop * array.itemsize)
                released = stop

    def _check_weight(self, weight: float) -> int:
        """Validate ``weight``; its exact integer value (0 if no integer tensor needs one)."""
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise ValueError(f"weight must be a positive number, got {weight!r}")
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError(f"weight must be positive and finite, got {weight!r}")
        if not self._has_exact:
            return 0
        if isinstance(weight, numbers.Integral) or float(weight).is_integer():
            return int(weight)
        example = next(name for name, s in self._require_slots().items() if s.kind == "int")
        raise ValueError(
            f"weight must be an integer (e.g. a sample count), got {weight!r}: "
            f"integer tensors such as {example!r} are averaged exactly"
        )

    def _require_slots(self) -> dict[str, _Slot]:
        if self._slots is None:
            raise RuntimeError("FedAvg.reset(reference) must be called before add() or result()")
        return self._slots
