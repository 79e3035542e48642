"""FedAvg's first update folded in as its chunks arrive: the same bits as adding it whole,
in any chunk order and cut anywhere, and nothing left behind when it fails."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from fx.algorithms.base import FoldedUpdate
from fx.algorithms.fedavg import FedAvg
from fx.tensors.codec import Chunk, CodecError, iter_chunks
from fx.tensors.dtypes import DTYPE_NAMES
from tests.unit.test_fedavg import WEIGHTS, random_tensor, run_fedavg

Model = dict[str, NDArray[Any]]


def _updates(seed: int = 3) -> list[Model]:
    rng = np.random.default_rng(seed)
    shapes = {name: (13, 7) for name in DTYPE_NAMES} | {"scalar": (), "empty": (0, 3)}
    dtypes = {name: name for name in DTYPE_NAMES} | {"scalar": "float32", "empty": "float64"}
    return [
        {name: random_tensor(dtypes[name], shape, rng) for name, shape in shapes.items()}
        for _ in WEIGHTS
    ]


def _chunks(update: Model, chunk_bytes: int, *, shuffle: bool) -> list[Chunk]:
    chunks = list(iter_chunks(update, chunk_bytes))
    if shuffle:
        random.Random(chunk_bytes).shuffle(chunks)
    return chunks


def _same(a: Model, b: Model) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


@pytest.mark.parametrize(
    ("chunk_bytes", "shuffle"),
    [(1 << 20, False), (64, True), (7, True), (3, False)],
    ids=["whole", "shuffled", "values-cut-shuffled", "values-cut"],
)
def test_a_first_update_folded_on_arrival_gives_the_same_bits(
    chunk_bytes: int, shuffle: bool
) -> None:
    updates = _updates()
    fedavg = FedAvg()
    fedavg.reset(updates[0])
    receiver = fedavg.receive_first(WEIGHTS[0])
    assert receiver is not None
    for chunk in _chunks(updates[0], chunk_bytes, shuffle=shuffle):
        receiver.feed(chunk)
    fedavg.add(receiver.finish(), WEIGHTS[0])
    receiver.discard()  # after the commit: changes nothing
    for update, weight in zip(updates[1:], WEIGHTS[1:], strict=True):
        fedavg.add(update, weight)
    assert fedavg.count == len(WEIGHTS)
    _same(fedavg.result(), run_fedavg(updates, WEIGHTS))


@pytest.mark.parametrize("failure", ["broken-off", "nan-at-the-end", "missing-tensor"])
def test_a_failed_first_update_leaves_nothing_behind(failure: str) -> None:
    updates = _updates()
    bad = {name: array.copy() for name, array in updates[0].items()}
    fedavg = FedAvg()
    fedavg.reset(updates[0])
    receiver = fedavg.receive_first(5)
    assert receiver is not None
    # Last tensor first, so that every kind of accumulator (the bool tally is last) was
    # written to before the failure.
    chunks = _chunks(bad, 40, shuffle=False)[::-1]
    if failure == "broken-off":
        for chunk in chunks[:-1]:
            receiver.feed(chunk)
    elif failure == "nan-at-the-end":
        bad["float64"].reshape(-1)[0] = np.nan  # in the last chunk fed
        with pytest.raises(CodecError, match="'float64': 1 NaN"):
            for chunk in chunks:
                receiver.feed(chunk)
    else:
        for chunk in chunks:
            if chunk.name != "int8":
                receiver.feed(chunk)
        with pytest.raises(CodecError, match="missing tensors: 'int8'"):
            receiver.finish()
    receiver.discard()
    assert fedavg.count == 0
    # The round goes on as if that update had never come. One update of weight 1 then
    # is the mean: any weight left in an accumulator (the bool tally is the one not
    # overwritten by a first update) would show.
    fedavg.add(updates[1], 1)
    _same(fedavg.result(), run_fedavg([updates[1]], [1]))


def test_while_the_first_update_arrives_no_other_can_be_added() -> None:
    updates = _updates()
    fedavg = FedAvg()
    fedavg.reset(updates[0])
    receiver = fedavg.receive_first(WEIGHTS[0])
    assert receiver is not None
    assert fedavg.receive_first(WEIGHTS[1]) is None  # one at a time
    with pytest.raises(RuntimeError, match="still arriving"):
        fedavg.add(updates[1], WEIGHTS[1])
    for chunk in iter_chunks(updates[0], 1 << 20):
        receiver.feed(chunk)
    folded = receiver.finish()
    with pytest.raises(ValueError, match="not the 120"):
        fedavg.add(folded, 121)
    fedavg.add(folded, WEIGHTS[0])
    with pytest.raises(ValueError, match="not received into this round"):
        fedavg.add(folded, WEIGHTS[0])  # committed once only
    assert fedavg.receive_first(WEIGHTS[1]) is None  # the round has its first update
    fedavg.add(updates[1], WEIGHTS[1])
    assert fedavg.count == 2


def test_a_receiver_of_a_closed_round_cannot_commit_into_the_next() -> None:
    updates = _updates()
    fedavg = FedAvg()
    fedavg.reset(updates[0])
    stale = fedavg.receive_first(WEIGHTS[0])
    assert stale is not None
    fedavg.reset(updates[0])  # the round closed while it was arriving
    for chunk in iter_chunks(updates[0], 1 << 20):
        stale.feed(chunk)
    with pytest.raises(ValueError, match="not received into this round"):
        fedavg.add(stale.finish(), WEIGHTS[0])
    stale.discard()
    for update, weight in zip(updates, WEIGHTS, strict=True):
        fedavg.add(update, weight)
    _same(fedavg.result(), run_fedavg(updates, WEIGHTS))


def test_integer_overflow_and_bad_weights_are_refused() -> None:
    model = {"n": np.array([2**62, 1], dtype=np.int64)}
    fedavg = FedAvg()
    fedavg.reset(model)
    assert fedavg.receive_first(0) is None  # add() says why
    assert fedavg.receive_first(2.5) is None  # integer tensors need integer weights
    receiver = fedavg.receive_first(4)
    assert receiver is not None
    with pytest.raises(CodecError, match="could overflow int64"):
        for chunk in iter_chunks(model, 1 << 20):
            receiver.feed(chunk)
    receiver.discard()
    assert fedavg.count == 0


def test_a_folded_update_holds_no_arrays() -> None:
    folded = FoldedUpdate(object())
    assert len(folded) == 0 and list(folded) == [] and "w" not in folded
