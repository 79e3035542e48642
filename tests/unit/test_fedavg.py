"""FedAvg: streaming, per-dtype weighted mean, equal to the naive one."""

from __future__ import annotations

import tracemalloc
import weakref
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from numpy.typing import NDArray

from fx.algorithms.base import Aggregation
from fx.algorithms.fedavg import FedAvg
from fx.algorithms.registry import AGGREGATIONS, resolve_aggregation
from fx.tensors.dtypes import DTYPE_NAMES, dtype_from_name

Model = dict[str, NDArray[Any]]
WEIGHTS = [120, 7, 64, 1, 33]


def random_tensor(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> NDArray[Any]:
    np_dtype = dtype_from_name(dtype)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if np.issubdtype(np_dtype, np.integer):
        info = np.iinfo(np_dtype)
        low, high = max(int(info.min), -(10**6)), min(int(info.max), 10**6)
        return rng.integers(low, high, size=shape, endpoint=True).astype(np_dtype)
    return rng.uniform(-1, 1, size=shape).astype(np_dtype)


def naive_average(updates: list[NDArray[Any]], weights: list[int]) -> NDArray[Any]:
    """np.average in float64, then back to the input dtype (ints: round half to even)."""
    stack = np.stack([u.astype(np.float64) for u in updates])
    mean = np.average(stack, axis=0, weights=np.asarray(weights, dtype=np.float64))
    dtype = updates[0].dtype
    if np.issubdtype(dtype, np.integer):
        mean = np.rint(mean)
    return mean.astype(dtype)


def run_fedavg(updates: list[dict[str, NDArray[Any]]], weights: list[int]) -> dict[str, Any]:
    fedavg = FedAvg()
    fedavg.reset(updates[0])
    for update, weight in zip(updates, weights, strict=True):
        fedavg.add(update, weight)
    assert fedavg.count == len(updates)
    return fedavg.result()


@pytest.mark.parametrize("dtype", [d for d in DTYPE_NAMES if d != "bool"])
def test_streaming_mean_equals_naive_weighted_average(dtype: str) -> None:
    rng = np.random.default_rng(DTYPE_NAMES.index(dtype))
    shape = (257, 129)  # several accumulation blocks, not a multiple of any
    updates = [{"t": random_tensor(dtype, shape, rng)} for _ in WEIGHTS]
    got = run_fedavg(updates, WEIGHTS)["t"]
    want = naive_average([u["t"] for u in updates], WEIGHTS)

    assert got.dtype == want.dtype == dtype_from_name(dtype)
    assert got.shape == shape
    if dtype == "float32":
        # Accumulated in float32: 5 roundings of values in [-1, 1].
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    elif dtype in ("float16", "bfloat16"):
        # float32 accumulation, then one rounding to the 16-bit type: within one
        # unit in the last place everywhere, and identical almost everywhere.
        mantissa_bits = {"float16": 10, "bfloat16": 7}[dtype]
        got64, want64 = got.astype(np.float64), want.astype(np.float64)
        ulp = np.maximum(np.abs(want64), 2.0**-14) * 2.0**-mantissa_bits
        assert np.all(np.abs(got64 - want64) <= ulp)
        assert np.mean(got64 == want64) > 0.99
    else:
        # float64 and every integer type: exactly the naive result.
        np.testing.assert_array_equal(got, want)


def test_every_dtype_in_one_model_keeps_its_dtype() -> None:
    rng = np.random.default_rng(3)
    updates = [
        {dtype: random_tensor(dtype, (4, 3), rng) for dtype in DTYPE_NAMES}
        | {"scalar": np.array(5 + i, dtype=np.int64), "empty": np.zeros((0, 2), np.float16)}
        for i in range(3)
    ]
    result = run_fedavg(updates, [1, 2, 3])
    assert list(result) == list(updates[0])
    for name, array in updates[0].items():
        assert result[name].dtype == array.dtype, name
        assert result[name].shape == array.shape, name
    assert int(result["scalar"]) == 6  # (5*1 + 6*2 + 7*3) / 6 = 38 / 6 = 6.33


@pytest.mark.parametrize(
    ("values", "weights", "mean"),
    [
        ([1, 2], [1, 1], 2),  # 1.5 -> 2 (even)
        ([2, 3], [1, 1], 2),  # 2.5 -> 2 (even)
        ([-1, -2], [1, 1], -2),  # -1.5 -> -2
        ([-2, -3], [1, 1], -2),  # -2.5 -> -2
        ([0, 10], [2, 1], 3),  # 3.33 -> 3
        ([0, 10], [1, 2], 7),  # 6.67 -> 7
    ],
)
def test_integer_mean_rounds_half_to_even(values: list[int], weights: list[int], mean: int) -> None:
    updates = [{"n": np.array([v], dtype=np.int32)} for v in values]
    assert run_fedavg(updates, weights)["n"].tolist() == [mean]


def test_integer_mean_is_exact_beyond_float64_precision() -> None:
    # float64 cannot represent 2**60 + 1; an average done in floats would be off.
    big = 2**60
    updates = [{"steps": np.array(v, dtype=np.int64)} for v in (big + 1, big + 3, big + 5)]
    result = run_fedavg(updates, [1, 1, 1])["steps"]
    assert result.dtype == np.int64 and result.shape == ()
    assert int(result) == big + 3


def test_uint8_and_int8_extremes_stay_in_range() -> None:
    updates = [{"u": np.array([255, 0], np.uint8), "i": np.array([-128, 127], np.int8)}] * 2
    updates.append({"u": np.array([254, 1], np.uint8), "i": np.array([-127, 126], np.int8)})
    result = run_fedavg(updates, [1, 1, 1])
    assert result["u"].tolist() == [255, 0]  # 254.67, 0.33
    assert result["i"].tolist() == [-128, 127]  # -127.67, 126.67


def test_bool_is_a_weighted_majority_and_a_tie_keeps_the_reference() -> None:
    reference = {"mask": np.array([True, False, True, False])}
    fedavg = FedAvg()
    fedavg.reset(reference)
    fedavg.add({"mask": np.array([True, True, False, False])}, 3)
    fedavg.add({"mask": np.array([False, False, True, True])}, 3)
    # Ties everywhere: the reference stays.
    assert fedavg.result()["mask"].tolist() == [True, False, True, False]
    fedavg.add({"mask": np.array([False, True, False, True])}, 1)
    assert fedavg.result()["mask"].tolist() == [False, True, False, True]


def test_weight_must_be_positive_and_finite() -> None:
    fedavg = FedAvg()
    fedavg.reset({"w": np.zeros(2, np.float32)})
    for weight in (0, -1, 0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="weight must be positive"):
            fedavg.add({"w": np.ones(2, np.float32)}, weight)
    assert fedavg.count == 0


def test_fractional_weights_work_for_float_models_but_not_with_integer_tensors() -> None:
    floats = FedAvg()
    floats.reset({"w": np.zeros(2, np.float64)})
    floats.add({"w": np.array([1.0, 2.0])}, 0.25)
    floats.add({"w": np.array([3.0, 4.0])}, 0.75)
    np.testing.assert_array_equal(floats.result()["w"], [2.5, 3.5])

    mixed = FedAvg()
    mixed.reset({"w": np.zeros(2, np.float32), "bn.num_batches_tracked": np.array(0)})
    mixed.add({"w": np.ones(2, np.float32), "bn.num_batches_tracked": np.array(3)}, 2.0)
    with pytest.raises(ValueError, match=r"'bn\.num_batches_tracked' are averaged exactly"):
        mixed.add({"w": np.ones(2, np.float32), "bn.num_batches_tracked": np.array(3)}, 0.5)
    assert mixed.count == 1


def test_a_mismatched_update_is_refused_and_changes_nothing() -> None:
    reference: Model = {"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    fedavg = FedAvg()
    fedavg.reset(reference)
    fedavg.add({"w": np.ones((2, 2), np.float32), "b": np.ones(2, np.float32)}, 1)
    bad_updates: list[tuple[Model, str]] = [
        ({"w": np.ones((2, 2), np.float32)}, "missing tensor 'b'"),
        ({"w": np.ones((2, 2), np.float16), "b": np.ones(2, np.float32)}, "dtype float16"),
        ({"w": np.ones((4,), np.float32), "b": np.ones(2, np.float32)}, r"shape \[4\]"),
        (
            {"w": np.ones((2, 2), np.float32), "b": np.ones(2, np.float32), "x": np.ones(1)},
            "unknown tensor 'x'",
        ),
    ]
    for update, message in bad_updates:
        with pytest.raises(ValueError, match=message):
            fedavg.add(update, 5)
    assert fedavg.count == 1
    np.testing.assert_array_equal(fedavg.result()["w"], np.ones((2, 2), np.float32))


def test_integer_overflow_is_refused_not_wrapped() -> None:
    fedavg = FedAvg()
    fedavg.reset({"n": np.zeros(1, np.int64)})
    fedavg.add({"n": np.full(1, 2**61, np.int64)}, 2)
    with pytest.raises(ValueError, match="could overflow int64"):
        fedavg.add({"n": np.full(1, 2**61, np.int64)}, 4)
    assert fedavg.count == 1
    assert fedavg.result()["n"].tolist() == [2**61]


def test_add_does_not_modify_the_update() -> None:
    update: Model = {"w": np.full(1000, 0.5, np.float32), "n": np.array([3], np.int64)}
    fedavg = FedAvg()
    fedavg.reset(update)
    fedavg.add(update, 4)
    fedavg.add(update, 2)
    assert np.all(update["w"] == 0.5) and update["n"].tolist() == [3]


def test_add_allocates_no_full_size_temporaries() -> None:
    size = 4 << 20  # 16 MiB of float32 per update
    reference: Model = {"w": np.zeros(size, np.float32), "h": np.zeros(size, np.float16)}
    update: Model = {"w": np.ones(size, np.float32), "h": np.ones(size, np.float16)}
    fedavg = FedAvg()
    fedavg.reset(reference)
    fedavg.add(update, 1)
    tracemalloc.start()
    try:
        for weight in range(2, 12):
            fedavg.add(update, weight)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One cache-sized scratch block per accumulator dtype; far below one tensor.
    assert peak < 2 << 20
    assert fedavg.result()["w"][0] == np.float32(66 / 66)


def test_result_needs_reset_and_updates() -> None:
    fedavg = FedAvg()
    with pytest.raises(RuntimeError, match="reset"):
        fedavg.result()
    fedavg.reset({"w": np.zeros(1, np.float32)})
    with pytest.raises(ValueError, match="no updates"):
        fedavg.result()


def test_reset_starts_a_fresh_round() -> None:
    fedavg = FedAvg()
    fedavg.reset({"w": np.zeros(1, np.float32)})
    fedavg.add({"w": np.array([100.0], np.float32)}, 1)
    fedavg.reset({"w": np.zeros(1, np.float32)})
    assert fedavg.count == 0
    fedavg.add({"w": np.array([2.0], np.float32)}, 3)
    assert fedavg.result()["w"].tolist() == [2.0]


def test_registry_resolves_fedavg_and_lists_names_for_an_unknown_one() -> None:
    aggregation = resolve_aggregation("fedavg")
    assert isinstance(aggregation, FedAvg)
    assert isinstance(aggregation, Aggregation)
    assert AGGREGATIONS["fedavg"] is FedAvg
    with pytest.raises(ValueError, match="unknown aggregation 'nope'; valid names: fedavg"):
        resolve_aggregation("nope")


def test_bfloat16_accumulates_above_its_own_precision() -> None:
    # In bfloat16 (8 significant bits) 256 + 1 rounds back to 256, so a bfloat16
    # accumulator would give 256 / 5 = 51.2; the float32 one keeps every 1.
    updates = [{"b": np.array([256.0], ml_dtypes.bfloat16)}]
    updates += [{"b": np.array([1.0], ml_dtypes.bfloat16)}] * 4
    result = run_fedavg(updates, [1] * 5)["b"]
    assert result.dtype == np.dtype(ml_dtypes.bfloat16)
    assert float(result[0]) == 52.0


def test_take_result_equals_result_and_reuses_the_float_accumulators() -> None:
    """What the aggregator calls when a round closes: the same values as result(),
    float32/float64 means built in the accumulators' memory, the state then spent."""
    rng = np.random.default_rng(11)
    updates = [{name: random_tensor(name, (33, 17), rng) for name in DTYPE_NAMES} for _ in WEIGHTS]
    fedavg = FedAvg()
    fedavg.reset(updates[0])
    for update, weight in zip(updates, WEIGHTS, strict=True):
        fedavg.add(update, weight)
    expected = fedavg.result()
    slots = fedavg._slots
    assert slots is not None
    accumulators = {name: slots[name].acc for name in ("float32", "float64")}
    taken = fedavg.take_result()
    for name in DTYPE_NAMES:
        assert taken[name].dtype == expected[name].dtype
        assert taken[name].tobytes() == expected[name].tobytes(), name
    for name, acc in accumulators.items():
        assert taken[name] is acc
    with pytest.raises(RuntimeError, match="reset"):
        fedavg.add(updates[0], 1)


def test_a_released_model_becomes_the_next_accumulator_and_a_held_one_is_left_alone() -> None:
    """Rounds reuse the memory of models nobody holds any more, the last round's first;
    a model still held (the aggregator serving it) is never written to."""
    reference = {"w": np.zeros(1000, np.float32)}
    fedavg = FedAvg()

    def round_of(value: float, previous: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        fedavg.reset(previous)
        fedavg.add({"w": np.full(1000, value, np.float32)}, 3)
        return fedavg.take_result()

    first = round_of(2.0, reference)
    first_ref = weakref.ref(first["w"])
    second = round_of(4.0, first)  # round one's model is still held: new memory
    assert second["w"] is not first["w"]
    assert np.all(first["w"] == 2.0) and np.all(second["w"] == 4.0)
    second_ref = weakref.ref(second["w"])
    del first, second  # both let go of, as the aggregator does once a model is on disk
    third = round_of(6.0, {"w": np.zeros(1000, np.float32)})
    assert third["w"] is second_ref()  # the model handed out last is taken first...
    assert first_ref() is None  # ...and the older spare is dropped, not kept
    assert np.all(third["w"] == 6.0)
