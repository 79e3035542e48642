"""A closed round's files are written after the next round opens, in order, and
"done" is announced only once they are on disk."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fx.aggregator import checkpoint
from fx.aggregator.checkpoint import CheckpointStore, ResumeState, RoundRecord
from fx.aggregator.core import Aggregator, RoundSummary
from fx.aggregator.store import ModelStore
from fx.algorithms.fedavg import FedAvg
from fx.collaborator.runner import build_initial_weights
from fx.plan.loader import load_collaborator_names, load_plan
from fx.tensors.safetensors_io import link_file, load_tensors, save_tensors
from fx.transport.api import TaskAssignment, TaskReport
from fx.workspace.create import NetworkChoice, create_workspace
from fx.workspace.paths import WorkspacePaths
from fx.workspace.templates import get_template


class GatedCheckpoints(CheckpointStore):
    """Commits a round only once ``gate`` is set: a very slow disk."""

    def __init__(self, save_dir: Path, gate: threading.Event) -> None:
        super().__init__(save_dir)
        self.gate = gate

    def save(self, *args: Any, **kwargs: Any) -> None:
        assert self.gate.wait(30)
        super().save(*args, **kwargs)


def _workspace(tmp_path: Path) -> WorkspacePaths:
    return create_workspace(
        get_template("numpy_logreg_digits"),
        tmp_path / "ws",
        collaborators=["site-1", "site-2"],
        network=NetworkChoice("localhost", 50051),
        rounds=1,
    )


def _report_round(aggregator: Aggregator, round: int, *, train: bool) -> None:
    model = aggregator.global_model().tensors
    for name in aggregator.collaborators:
        ack = aggregator.submit(name, TaskReport(round, "validate", 10, {"accuracy": 0.5}))
        assert ack.accepted, ack.reason
        if train:
            update = {k: np.full_like(v, 2.0) for k, v in model.items()}
            ack = aggregator.submit(name, TaskReport(round, "train", 10, {}, update))
            assert ack.accepted, ack.reason


def test_the_next_round_opens_before_the_closed_one_is_written(tmp_path: Path) -> None:
    paths = _workspace(tmp_path)
    plan = load_plan(paths)
    gate = threading.Event()
    closed: list[RoundSummary] = []
    checkpoints = GatedCheckpoints(paths.save, gate)
    aggregator = Aggregator(
        plan=plan,
        collaborators=load_collaborator_names(paths),
        initial_model=build_initial_weights(paths.root, plan.model.runner, plan.model.settings),
        aggregation=FedAvg(),
        store=ModelStore(paths.save),
        checkpoints=checkpoints,
        on_round_closed=closed.append,
    )
    try:
        _report_round(aggregator, 0, train=True)
        # Round 1 (the final validate pass) is open at once: round 0 is not committed yet.
        assignment = aggregator.get_tasks("site-1")
        assert assignment.round == 1 and assignment.tasks
        assert closed == [] and checkpoints.load_state() is None

        # The round after is two behind the disk: whoever closes it waits (backpressure).
        reporting = threading.Thread(
            target=_report_round, args=(aggregator, 1), kwargs={"train": False}
        )
        reporting.start()
        deadline = time.monotonic() + 10
        while not aggregator.done and time.monotonic() < deadline:
            time.sleep(0.01)
        assert aggregator.done
        answer: list[TaskAssignment] = []
        asking = threading.Thread(target=lambda: answer.append(aggregator.get_tasks("site-1")))
        asking.start()
        asking.join(0.3)
        assert asking.is_alive(), "'done' must wait until the last round is on disk"
        gate.set()
        asking.join(10)
        reporting.join(10)
        assert answer and answer[0].done
    finally:
        gate.set()
        aggregator.close()

    # Written in order, each round reported once its checkpoint is committed.
    assert [summary.round for summary in closed] == [0, 1]
    state = checkpoints.load_state()
    assert state is not None and state.finished and state.next_round == 2
    assert [record.round for record in checkpoints.rounds()] == [0, 1]
    last = load_tensors(paths.save / "last.safetensors")
    for name, tensor in aggregator.global_model().tensors.items():
        np.testing.assert_array_equal(last[name], tensor)
    # The checkpoint is last.safetensors under a second name, not a second write.
    (checkpoint,) = (paths.save / "checkpoints").glob("model-v*.safetensors")
    assert os.path.samefile(checkpoint, paths.save / "last.safetensors")


def test_link_file_replaces_the_target_and_survives_the_source_being_replaced(
    tmp_path: Path,
) -> None:
    source, target = tmp_path / "last.safetensors", tmp_path / "copy.safetensors"
    save_tensors(source, {"w": np.ones(3, np.float32)})
    save_tensors(target, {"w": np.zeros(3, np.float32)})
    assert link_file(source, target)
    save_tensors(source, {"w": np.full(3, 7, np.float32)})  # a new file under the old name
    assert load_tensors(target)["w"].tolist() == [1.0, 1.0, 1.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.safetensors", "last.safetensors"]


def test_without_hard_links_a_checkpoint_copies_the_saved_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the filesystem has no hard links the checkpoint copies last.safetensors
    (read through a map of it: the aggregator no longer holds the model in memory)."""
    monkeypatch.setattr(checkpoint, "link_file", lambda source, target: False)
    model = {"w": np.arange(10, dtype=np.float32), "n": np.array(4, np.int64)}
    last = tmp_path / "last.safetensors"
    save_tensors(last, model)
    store = CheckpointStore(tmp_path)
    state = ResumeState("fed", "training", 1, 1, "uuid-1", None, False)
    store.save(state, None, RoundRecord(0, ("site-1",), (), {}), model_copy=last)
    saved = store.load_model()
    assert not os.path.samefile(store.directory / "model-v00001.safetensors", last)
    assert {k: v.tobytes() for k, v in saved.items()} == {k: v.tobytes() for k, v in model.items()}
    assert store.load_state() == state
