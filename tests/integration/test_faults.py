"""Fault injection with real processes: kill -9 collaborators and the aggregator mid-federation."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fx.tensors.safetensors_io import load_tensors
from tests.conftest import free_port
from tests.integration.fxproc import finish_ok, fx, fx_start, kill_survivors, start_collaborators

pytestmark = pytest.mark.integration

ROUNDS = 4
SLOW_RUNNER = '''\
"""The numpy template, with deliberately slow training (a fault-injection fixture)."""
import time

from src.runner import SoftmaxRegression


class SlowRunner(SoftmaxRegression):
    def train(self, settings):
        time.sleep(float({**self.settings, **settings}.get("train_delay_s", 0)))
        return super().train(settings)
'''


def _workspace(tmp_path: Path, *, train_delay_s: float, rounds: int = ROUNDS) -> Path:
    """A numpy-template federation whose training takes ``train_delay_s`` per round."""
    created = fx(
        "workspace",
        "create",
        "--template",
        "numpy_logreg_digits",
        "--prefix",
        "fed",
        "--rounds",
        str(rounds),
        "--agg-port",
        str(free_port()),
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    workspace = tmp_path / "fed"
    (workspace / "src" / "slow_runner.py").write_text(SLOW_RUNNER)
    plan_path = workspace / "plan" / "plan.yaml"
    plan = yaml.safe_load(plan_path.read_text())
    plan["model"]["runner"] = "src.slow_runner:SlowRunner"
    plan["model"]["settings"]["train_delay_s"] = train_delay_s
    plan["aggregator"] |= {"liveness_timeout_s": 3, "linger_s": 3}
    plan["collaborator"] |= {"heartbeat_s": 0.5, "connect_timeout_s": 60}
    plan_path.write_text(yaml.safe_dump(plan, sort_keys=False))
    certify = fx("pki", "certify", cwd=workspace)
    assert certify.returncode == 0, certify.stderr
    return workspace


def _wait_for(log: Path, pattern: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and re.search(pattern, log.read_text()):
            return
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} never appeared in {log}:\n{log.read_text()}")


def _kill9(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def _rounds_in_state_db(workspace: Path) -> list[tuple[int, list[str], list[str]]]:
    with sqlite3.connect(workspace / "save" / "state.db") as db:
        rows = db.execute("SELECT round, reporters, missing FROM rounds ORDER BY round").fetchall()
    return [(r, json.loads(rep), json.loads(miss)) for r, rep, miss in rows]


def _aggregated_accuracy(workspace: Path) -> dict[int, float]:
    lines = (workspace / "logs" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return {
        r["round"]: r["value"]
        for r in records
        if r["source"] == "aggregator" and r["name"] == "accuracy"
    }


def test_killed_collaborator_restarts_and_rejoins_its_round(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path, train_delay_s=1.0)
    agg_log = tmp_path / "agg.log"
    aggregator = fx_start("aggregator", "start", cwd=workspace, log=agg_log)
    collaborators = start_collaborators(workspace, tmp_path)
    try:
        _wait_for(agg_log, r"round 1/4")
        _wait_for(tmp_path / "site-2.log", r"round 2/4\s+validate")  # now training round 2
        _kill9(collaborators["site-2"])
        collaborators["site-2"] = fx_start(
            "collaborator", "start", "--name", "site-2", cwd=workspace, log=tmp_path / "site-2b.log"
        )
        for name, process in collaborators.items():
            finish_ok(process, tmp_path / f"{name}{'b' if name == 'site-2' else ''}.log")
        finish_ok(aggregator, agg_log)
    finally:
        kill_survivors(aggregator, *collaborators.values())
    rejoined = (tmp_path / "site-2b.log").read_text()
    # It rejoined round 2 and was given only the work it had not done (validate was reported).
    assert re.search(r"round 2/4\s+train", rejoined), rejoined
    assert not re.search(r"round 2/4\s+validate", rejoined), rejoined
    rounds = _rounds_in_state_db(workspace)
    assert [r[0] for r in rounds] == list(range(ROUNDS + 1))
    assert all(missing == [] for _, _, missing in rounds), rounds


def test_collaborator_that_never_returns_does_not_block_the_federation(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path, train_delay_s=0.5)
    agg_log = tmp_path / "agg.log"
    aggregator = fx_start("aggregator", "start", cwd=workspace, log=agg_log)
    collaborators = start_collaborators(workspace, tmp_path)
    try:
        _wait_for(agg_log, r"round 1/4")
        _kill9(collaborators["site-2"])
        output = finish_ok(collaborators["site-1"], tmp_path / "site-1.log")
        output = finish_ok(aggregator, agg_log)
    finally:
        kill_survivors(aggregator, *collaborators.values())
    assert "missing: site-2" in output
    rounds = _rounds_in_state_db(workspace)
    assert [r[0] for r in rounds] == list(range(ROUNDS + 1))
    assert rounds[0][2] == []
    assert all(missing == ["site-2"] for _, _, missing in rounds[2:]), rounds
    assert "no sign of life" in (workspace / "logs" / "aggregator.log").read_text()
    assert len(_aggregated_accuracy(workspace)) == ROUNDS + 1


def test_aggregator_killed_twice_resumes_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path, train_delay_s=1.0)
    reference = tmp_path / "reference"
    shutil.copytree(workspace, reference)

    collaborators = start_collaborators(workspace, tmp_path)
    aggregator = fx_start("aggregator", "start", cwd=workspace, log=tmp_path / "agg1.log")
    try:
        # Between rounds: right after round 1 is checkpointed.
        _wait_for(tmp_path / "agg1.log", r"round 1/4")
        _kill9(aggregator)
        aggregator = fx_start("aggregator", "start", cwd=workspace, log=tmp_path / "agg2.log")
        _wait_for(tmp_path / "agg2.log", r"Resuming from checkpoint: round 2")
        # Mid-round: while the collaborators train round 3 (validations already in).
        _wait_for(tmp_path / "agg2.log", r"round 2/4")
        time.sleep(0.5)
        _kill9(aggregator)
        aggregator = fx_start("aggregator", "start", cwd=workspace, log=tmp_path / "agg3.log")
        for name, process in collaborators.items():
            output = finish_ok(process, tmp_path / f"{name}.log")
        output = finish_ok(aggregator, tmp_path / "agg3.log")
    finally:
        kill_survivors(aggregator, *collaborators.values())
    assert "Resuming from checkpoint: round 3" in output
    rounds = _rounds_in_state_db(workspace)
    assert [r[0] for r in rounds] == list(range(ROUNDS + 1))
    assert set(_aggregated_accuracy(workspace)) == set(range(ROUNDS + 1))

    # The same federation without interruptions gives the same final model, bit for bit.
    uninterrupted = start_collaborators(reference, tmp_path, suffix="-ref")
    ref_aggregator = fx_start("aggregator", "start", cwd=reference, log=tmp_path / "agg-ref.log")
    for name, process in uninterrupted.items():
        finish_ok(process, tmp_path / f"{name}-ref.log")
    finish_ok(ref_aggregator, tmp_path / "agg-ref.log")
    resumed = load_tensors(workspace / "save" / "last.safetensors")
    expected = load_tensors(reference / "save" / "last.safetensors")
    assert resumed.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(resumed[name], expected[name])


def test_finished_federation_refuses_to_start_again_without_restart(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path, train_delay_s=0.0)
    aggregator = fx_start("aggregator", "start", cwd=workspace, log=tmp_path / "agg.log")
    collaborators = start_collaborators(workspace, tmp_path)
    for name, process in collaborators.items():
        finish_ok(process, tmp_path / f"{name}.log")
    finish_ok(aggregator, tmp_path / "agg.log")

    again = fx("aggregator", "start", cwd=workspace, timeout=30)
    assert again.returncode == 2
    assert "already finished" in again.stderr and "--restart" in again.stderr


def test_slow_collaborator_is_not_declared_dead(tmp_path: Path) -> None:
    """Local training longer than liveness_timeout_s (3 s): heartbeats keep it in every round."""
    workspace = _workspace(tmp_path, train_delay_s=4.0, rounds=2)
    aggregator = fx_start("aggregator", "start", cwd=workspace, log=tmp_path / "agg.log")
    collaborators = start_collaborators(workspace, tmp_path)
    try:
        for name, process in collaborators.items():
            output = finish_ok(process, tmp_path / f"{name}.log")
        output = finish_ok(aggregator, tmp_path / "agg.log")
    finally:
        kill_survivors(aggregator, *collaborators.values())
    assert "missing" not in output
    rounds = _rounds_in_state_db(workspace)
    assert [r[0] for r in rounds] == [0, 1, 2]
    assert all(sorted(reporters) == ["site-1", "site-2"] for _, reporters, _ in rounds), rounds
