"""Reasons to refuse a model update, one per problem, naming the tensor."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
from numpy.typing import NDArray

from fx.tensors.checks import find_update_problems, non_finite_count, tensor_problem
from fx.tensors.codec import spec_of


def reference() -> dict[str, NDArray[Any]]:
    return {
        "fc.weight": np.zeros((3, 4), np.float32),
        "fc.bias": np.zeros(3, np.float32),
        "head.weight": np.zeros((2, 3), ml_dtypes.bfloat16),
        "bn.num_batches_tracked": np.array(0, np.int64),
    }


def test_a_matching_update_has_no_problems() -> None:
    update = {name: np.ones_like(array) for name, array in reference().items()}
    assert find_update_problems(reference(), update) == []


def test_every_problem_is_reported_with_the_tensor_name() -> None:
    update: dict[str, NDArray[Any]] = {
        "fc.weight": np.zeros((4, 3), np.float32),  # transposed
        "head.weight": np.zeros((2, 3), np.float32),  # was bfloat16
        "bn.num_batches_tracked": np.array(5, np.int64),
        "fc.extra": np.zeros(1, np.float32),
    }
    assert find_update_problems(reference(), update) == [
        "unknown tensor 'fc.extra'",
        "missing tensor 'fc.bias'",
        "tensor 'fc.weight': shape [4, 3], expected [3, 4]",
        "tensor 'head.weight': dtype float32, expected bfloat16",
    ]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ml_dtypes.bfloat16])
def test_nan_and_inf_are_found_in_every_float_dtype(dtype: Any) -> None:
    array = np.ones(10, dtype)
    array[2] = np.nan
    array[5] = np.inf
    array[7] = -np.inf
    problem = tensor_problem("w", np.zeros(10, dtype), array)
    assert problem == "tensor 'w': 1 NaN and 2 infinite values"


def test_large_finite_float64_values_are_not_mistaken_for_inf() -> None:
    # Their sum overflows to inf; each value is still finite.
    array = np.full(4, 1e308)
    assert non_finite_count(array) == (0, 0)
    assert tensor_problem("w", array, array) is None


def test_non_finite_check_can_be_skipped_and_ignores_integers() -> None:
    array = np.array([np.nan], np.float32)
    assert tensor_problem("w", array, array, check_finite=False) is None
    integers = np.array([2**62], np.int64)
    assert tensor_problem("n", integers, integers) is None


def test_tensor_problem_accepts_a_spec_for_streaming_callers() -> None:
    spec = spec_of(np.zeros((2, 2), np.float16))
    assert spec == ("float16", (2, 2))
    assert tensor_problem("w", spec, np.zeros((2, 2), np.float16)) is None
    assert tensor_problem("w", ("float16", (2, 2)), np.zeros(4, np.float16)) == (
        "tensor 'w': shape [4], expected [2, 2]"
    )
    assert tensor_problem("w", spec, np.zeros((2, 2), np.complex64)) == (
        "tensor 'w': dtype complex64, expected float16"
    )


def test_nan_in_an_update_is_reported_by_find_update_problems() -> None:
    update = {name: np.ones_like(array) for name, array in reference().items()}
    update["fc.bias"][1] = np.nan
    assert find_update_problems(reference(), update) == [
        "tensor 'fc.bias': 1 NaN and 0 infinite values"
    ]
