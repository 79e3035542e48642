"""Why a model update must be refused, in words a person can act on.

:func:`find_update_problems` compares a whole update with the reference model;
:func:`tensor_problem` checks one tensor, for callers that check each tensor as
it arrives. Both return reasons (empty / None when the update is fine) rather
than raising: the aggregator logs them and the round goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fx.tensors.codec import TensorSpec, spec_of
from fx.tensors.dtypes import dtype_name, is_float
from fx.tensors.errors import CodecError

__all__ = ["find_update_problems", "non_finite_count", "tensor_problem"]

# Elements per block when counting NaN/Inf, to bound the temporary mask.
_BLOCK = 1 << 20


def tensor_problem(
    name: str,
    expected: NDArray[Any] | tuple[str, tuple[int, ...]],
    array: NDArray[Any],
    *,
    check_finite: bool = True,
) -> str | None:
    """Why ``array`` cannot stand for tensor ``name``, or None if it can.

    ``expected`` is the reference tensor or its (dtype name, shape). Checks the
    dtype, the shape and (for float tensors, unless ``check_finite`` is false)
    that every value is finite.
    """
    want = spec_of(expected) if isinstance(expected, np.ndarray) else TensorSpec(*expected)
    try:
        got = dtype_name(array.dtype)
    except CodecError:
        got = str(array.dtype)
    if got != want.dtype:
        return f"tensor {name!r}: dtype {got}, expected {want.dtype}"
    shape = tuple(int(n) for n in array.shape)
    if shape != tuple(want.shape):
        return f"tensor {name!r}: shape {list(shape)}, expected {list(want.shape)}"
    if check_finite and is_float(got):
        nan, inf = non_finite_count(array)
        if nan or inf:
            return f"tensor {name!r}: {nan} NaN and {inf} infinite values"
    return None


def find_update_problems(
    reference: Mapping[str, NDArray[Any] | tuple[str, tuple[int, ...]]],
    update: Mapping[str, NDArray[Any]],
    *,
    check_finite: bool = True,
) -> list[str]:
    """Every reason to refuse ``update`` as a replacement for ``reference``.

    Unknown and missing tensor names, then per-tensor problems (see
    :func:`tensor_problem`) in the update's order. Empty if the update is fine.
    """
    problems = [f"unknown tensor {name!r}" for name in update if name not in reference]
    problems += [f"missing tensor {name!r}" for name in reference if name not in update]
    for name, array in update.items():
        expected = reference.get(name)
        if expected is not None:
            problem = tensor_problem(name, expected, array, check_finite=check_finite)
            if problem is not None:
                problems.append(problem)
    return problems


def non_finite_count(array: NDArray[Any]) -> tuple[int, int]:
    """(number of NaN, number of +-Inf) values in a float array."""
    # Fast path, one read and no temporary: a sum is finite only if every term
    # is. float32 and float64 are summed as they are (no conversion pass: this runs
    # on every byte of every upload), 16-bit floats in float32, where they cannot
    # overflow. If the sum does not come out finite (a real NaN/Inf, or huge finite
    # values whose sum overflows), count exactly, block by block.
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.sum(array, dtype=np.float32 if array.dtype.itemsize < 4 else array.dtype)
    if np.isfinite(total):
        return 0, 0
    flat = array.reshape(-1)
    nan = inf = 0
    for start in range(0, flat.size, _BLOCK):
        block = flat[start : start + _BLOCK]
        nan += int(np.count_nonzero(np.isnan(block)))
        inf += int(np.count_nonzero(np.isinf(block)))
    return nan, inf
