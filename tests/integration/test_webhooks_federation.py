"""A federation of real processes posts its lifecycle to webhooks, and `fx aggregator
status` reports on it: the receivers are plain BaseHTTPRequestHandlers on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.integration.fxproc import FX, finish, fx, fx_env, fx_start, start_collaborators
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

ROUNDS = 3
SECRET = "a shared secret"


def _workspace(tmp_path: Path, port: int, webhooks: list[dict[str, str]]) -> Path:
    created = fx(
        "workspace",
        "create",
        "--template",
        "numpy_logreg_digits",
        "--prefix",
        "fed",
        "--rounds",
        str(ROUNDS),
        "--agg-port",
        str(port),
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    workspace = tmp_path / "fed"
    certified = fx("pki", "certify", cwd=workspace)
    assert certified.returncode == 0, certified.stderr
    plan_file = workspace / "plan" / "plan.yaml"
    plan = yaml.safe_load(plan_file.read_text())
    plan["notifications"] = {"webhooks": webhooks}
    plan_file.write_text(yaml.safe_dump(plan, sort_keys=False))
    return workspace


def test_webhooks_receive_the_federation_in_order_and_dead_ones_cost_nothing(
    tmp_path: Path,
) -> None:
    port = free_port()
    with (
        WebhookReceiver(secret=SECRET) as receiver,
        WebhookReceiver(secret="not the secret") as suspicious,
        socket.create_server(("127.0.0.1", 0)) as black_hole,  # accepts, never answers
    ):
        dead = f"http://127.0.0.1:{free_port()}/gone"  # connection refused
        workspace = _workspace(
            tmp_path,
            port,
            [
                {"url": dead},
                {"url": f"http://127.0.0.1:{black_hole.getsockname()[1]}/slow"},
                {"url": receiver.url, "secret_env": "FX_TEST_WEBHOOK_SECRET"},
                {"url": suspicious.url, "secret": SECRET},
            ],
        )
        env = fx_env() | {"FX_TEST_WEBHOOK_SECRET": SECRET}
        with (tmp_path / "agg.log").open("w") as agg_log:
            aggregator = subprocess.Popen(
                [*FX, "aggregator", "start"],
                cwd=workspace,
                env=env,
                stdout=agg_log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        try:
            # Before anyone joins: round 1, nobody connected, nobody reported.
            status = fx("aggregator", "status", "--timeout", "30", cwd=workspace)
            assert status.returncode == 0, status.stdout + status.stderr
            assert "round 1/3" in status.stdout
            assert "0/2 connected, 0/2 reported" in status.stdout
            assert "site-1" in status.stdout and "never" in status.stdout

            collaborators = start_collaborators(workspace, tmp_path)
            for name, process in collaborators.items():
                code, output = finish(process, tmp_path / f"{name}.log", timeout=120)
                assert code == 0, output
            collaborators_done = time.monotonic()
            code, output = finish(aggregator, tmp_path / "agg.log", timeout=60)
            exited_after = time.monotonic() - collaborators_done
            assert code == 0, output
        finally:
            if aggregator.poll() is None:
                aggregator.kill()
        deliveries = receiver.wait_for(ROUNDS + 3, timeout=5)
        rejected = suspicious.wait_for(1, timeout=5)

    events = [delivery.json() for delivery in deliveries]
    assert [e["notification_type"] for e in events] == [
        "TRAINING_START",
        *["UPDATE_ROUND_START"] * ROUNDS,
        "MODEL_TEST_ROUND",
        "TRAINING_FINISHED",
    ]
    assert [e["body"].get("round") for e in events] == [None, *range(ROUNDS + 1), None]
    training = {e["training_uuid"] for e in events}
    assert len(training) == 1
    uuid.UUID(training.pop())
    models = [uuid.UUID(e["body"]["global_model_uuid"]) for e in events]
    assert len(set(models[1:-1])) == ROUNDS + 1  # a new uuid per global model version
    for delivery in deliveries:
        assert delivery.signature_ok, "the receiver could not verify the HMAC"
        assert delivery.headers["Content-Type"] == "application/json"
        assert delivery.headers["X-Fx-Event"] == delivery.json()["notification_type"]
    # The same events, signed with a secret the receiver does not share: it notices.
    assert rejected and all(d.signature_ok is False for d in rejected)

    # A dead and a never-answering webhook cost the federation nothing: rounds
    # follow each other at training speed (the silent one's 5 s timeout would
    # show in every gap if delivery were in the round's path), and the finished
    # aggregator leaves within the webhook drain time.
    arrivals = [d.received_at for d in deliveries]
    # (From round 1 on: round 0 also waits for the collaborators' processes to start.)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals[2:])]
    assert max(gaps) < 4.0, gaps
    assert exited_after < 3.0 + 5.0, exited_after
    assert "Posting events to 4 webhook(s)" in output

    # The collaborators reacted to the pushes.
    site_log = (workspace / "logs" / "collaborator-site-1.log").read_text()
    assert "aggregator announced UPDATE_ROUND_START 1" in site_log
    assert "aggregator announced TRAINING_FINISHED" in site_log
    assert "Traceback" not in site_log


def test_status_without_an_aggregator_fails_with_a_clear_error(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path, free_port(), [])
    result = fx("aggregator", "status", "--timeout", "1", cwd=workspace)
    assert result.returncode == 5, result.stdout + result.stderr
    assert "did not answer" in result.stderr and "Traceback" not in result.stderr
    unknown = fx("aggregator", "status", "--name", "site-9", cwd=workspace)
    assert unknown.returncode == 3 and "no collaborator named 'site-9'" in unknown.stderr
    os.remove(workspace / "cert" / "client" / "site-1.key")
    os.remove(workspace / "cert" / "client" / "site-2.key")
    keyless = fx("aggregator", "status", cwd=workspace)
    assert keyless.returncode == 4 and "no collaborator certificate" in keyless.stderr


def test_status_json_is_machine_readable(tmp_path: Path) -> None:
    port = free_port()
    workspace = _workspace(tmp_path, port, [])
    aggregator = fx_start("aggregator", "start", cwd=workspace, log=tmp_path / "agg.log")
    try:
        result = fx("aggregator", "status", "--json", "--timeout", "30", cwd=workspace)
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        assert status["round"] == 0 and status["rounds_to_train"] == ROUNDS
        assert [c["name"] for c in status["collaborators"]] == ["site-1", "site-2"]
        assert status["complete"] == [] and status["tasks"] == ["validate", "train"]
    finally:
        aggregator.kill()
        aggregator.wait()
