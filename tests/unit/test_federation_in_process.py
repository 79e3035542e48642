"""A whole federation in one process: Aggregator + Collaborators through LocalTransport."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from fx.aggregator.core import Aggregator, RoundSummary
from fx.aggregator.store import ModelStore
from fx.algorithms.registry import resolve_aggregation
from fx.collaborator.core import Collaborator
from fx.collaborator.runner import build_runner
from fx.metrics import MetricsLog, read_metrics
from fx.plan.loader import load_collaborator_names, load_data_path, load_plan
from fx.tensors.safetensors_io import load_tensors
from fx.transport.api import TaskReport
from fx.transport.local import LocalTransport
from fx.workspace.create import NetworkChoice, create_workspace
from fx.workspace.paths import WorkspacePaths
from fx.workspace.templates import get_template


def _workspace(
    tmp_path: Path, template: str = "numpy_logreg_digits", rounds: int = 5
) -> WorkspacePaths:
    return create_workspace(
        get_template(template),
        tmp_path / "ws",
        collaborators=["site-1", "site-2"],
        network=NetworkChoice("localhost", 50051),
        rounds=rounds,
    )


def _aggregator(paths: WorkspacePaths, summaries: list[RoundSummary]) -> Aggregator:
    plan = load_plan(paths)
    first = build_runner(
        paths.root,
        plan.model.runner,
        data_dir=load_data_path(paths, "site-1"),
        settings=plan.model.settings,
        collaborator="site-1",
    )
    return Aggregator(
        plan=plan,
        collaborators=load_collaborator_names(paths),
        initial_model=first.get_weights(),
        aggregation=resolve_aggregation("fedavg"),
        store=ModelStore(paths.save),
        metrics=MetricsLog(paths.metrics),
        on_round_closed=summaries.append,
    )


def _run_collaborators(paths: WorkspacePaths, aggregator: Aggregator) -> list[int]:
    plan = load_plan(paths)
    worked: dict[str, int] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            runner = build_runner(
                paths.root,
                plan.model.runner,
                data_dir=load_data_path(paths, name),
                settings=plan.model.settings,
                collaborator=name,
            )
            collaborator = Collaborator(
                name=name,
                api=LocalTransport(aggregator, name),
                runner=runner,
                plan=plan,
                poll_wait_s=5,
            )
            worked[name] = collaborator.run()
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in aggregator.collaborators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return [worked[name] for name in aggregator.collaborators]


def test_federation_trains_and_saves_models_without_sockets(tmp_path: Path) -> None:
    paths = _workspace(tmp_path)
    summaries: list[RoundSummary] = []
    aggregator = _aggregator(paths, summaries)

    worked = _run_collaborators(paths, aggregator)

    assert aggregator.done
    # 5 training rounds plus the final validation pass, each with both collaborators.
    assert worked == [6, 6]
    assert [s.round for s in summaries] == [0, 1, 2, 3, 4, 5]
    assert summaries[-1].final and all(not s.final for s in summaries[:-1])
    accuracy = [s.metrics[("validate", "accuracy")] for s in summaries]
    assert accuracy[-1] >= 0.9
    assert accuracy[-1] > accuracy[0]

    last = load_tensors(paths.last_model)
    best = load_tensors(paths.best_model)
    model = aggregator.global_model().tensors
    assert last.keys() == model.keys()
    for name in model:
        np.testing.assert_array_equal(last[name], model[name])
    assert best.keys() == model.keys()

    records = read_metrics(paths.metrics)
    aggregated = [r for r in records if r["source"] == "aggregator" and r["name"] == "accuracy"]
    assert [r["round"] for r in aggregated] == [0, 1, 2, 3, 4, 5]
    assert {r["source"] for r in records} == {"aggregator", "site-1", "site-2"}
    assert all({"round", "source", "task", "name", "value"} <= r.keys() for r in records)


def test_global_model_is_the_sample_weighted_average(tmp_path: Path) -> None:
    paths = _workspace(tmp_path, rounds=1)
    aggregator = _aggregator(paths, [])
    reference = aggregator.global_model().tensors
    updates = {
        "site-1": ({k: np.full_like(v, 1.0) for k, v in reference.items()}, 30),
        "site-2": ({k: np.full_like(v, 4.0) for k, v in reference.items()}, 10),
    }
    for name, (tensors, samples) in updates.items():
        for task in ("validate", "train"):
            ack = aggregator.submit(
                name,
                TaskReport(
                    0,
                    task,
                    samples,
                    {"accuracy": 0.5, "loss": 1.0},
                    tensors if task == "train" else None,
                ),
            )
            assert ack.accepted, ack.reason
    model = aggregator.global_model().tensors
    for tensor in model.values():
        np.testing.assert_allclose(tensor, (1.0 * 30 + 4.0 * 10) / 40)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda t: {**t, "bogus": np.zeros(3, np.float32)}, "bogus"),
        (lambda t: {k: v[..., :1] for k, v in t.items()}, "shape"),
        (lambda t: {k: v.astype(np.float64) for k, v in t.items()}, "dtype"),
        (lambda t: {k: np.full_like(v, np.nan) for k, v in t.items()}, "NaN"),
    ],
)
def test_bad_updates_are_refused_and_the_round_goes_on(tmp_path: Path, change, reason) -> None:  # type: ignore[no-untyped-def]
    paths = _workspace(tmp_path, rounds=1)
    aggregator = _aggregator(paths, [])
    good = {k: v.copy() for k, v in aggregator.global_model().tensors.items()}
    ack = aggregator.submit("site-1", TaskReport(0, "train", 10, {}, change(good)))
    assert not ack.accepted and reason in ack.reason
    # Stale round and unassigned task are refused too.
    assert not aggregator.submit("site-1", TaskReport(3, "train", 10, {}, good)).accepted
    assert "not assigned" in aggregator.submit("site-1", TaskReport(0, "nope", 10, {}, good)).reason
    for name in ("site-1", "site-2"):
        assert aggregator.submit(
            name, TaskReport(0, "validate", 10, {"accuracy": 0.1}, None)
        ).accepted
        assert aggregator.submit(name, TaskReport(0, "train", 10, {}, dict(good))).accepted
    assert aggregator.round == 1


def test_duplicate_upload_is_counted_once(tmp_path: Path) -> None:
    paths = _workspace(tmp_path, rounds=1)
    aggregator = _aggregator(paths, [])
    reference = aggregator.global_model().tensors
    ones = {k: np.ones_like(v) for k, v in reference.items()}
    threes = {k: np.full_like(v, 3.0) for k, v in reference.items()}
    assert aggregator.submit("site-1", TaskReport(0, "train", 10, {}, dict(ones))).accepted
    again = aggregator.submit("site-1", TaskReport(0, "train", 10, {}, dict(ones)))
    assert again.accepted and again.duplicate
    for name in ("site-1", "site-2"):
        aggregator.submit(name, TaskReport(0, "validate", 10, {"accuracy": 0.1}, None))
    aggregator.submit("site-2", TaskReport(0, "train", 10, {}, dict(threes)))
    for tensor in aggregator.global_model().tensors.values():
        np.testing.assert_allclose(tensor, 2.0)  # (1*10 + 3*10) / 20, the duplicate not counted
