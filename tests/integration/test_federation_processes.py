"""The README's four commands as real processes over mutual TLS on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.fxproc import finish, fx, fx_start

pytestmark = pytest.mark.integration


def _create(tmp_path: Path, name: str, port: int, template: str = "torch_cnn_digits") -> Path:
    result = fx(
        "workspace",
        "create",
        "--template",
        template,
        "--prefix",
        name,
        "--agg-addr",
        "localhost",
        "--agg-port",
        str(port),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    workspace = tmp_path / name
    certify = fx("pki", "certify", cwd=workspace)
    assert certify.returncode == 0, certify.stderr
    return workspace


def test_four_commands_train_a_model_and_refuse_impostors(tmp_path: Path) -> None:
    port = free_port()
    workspace = _create(tmp_path, "fed", port)
    aggregator = fx_start("aggregator", "start", cwd=workspace, log=tmp_path / "agg.log")
    try:
        # An impostor: site-2's certificate, claiming to be site-1.
        impostor = _create_impostor(tmp_path, workspace)
        refused = fx(
            "collaborator", "start", "--name", "site-1", "--connect-timeout", "20", cwd=impostor
        )
        assert refused.returncode == 6, refused.stdout + refused.stderr
        assert (
            "refused" in refused.stderr
            and "does not match claimed sender 'site-1'" in refused.stderr
        )
        assert "Traceback" not in refused.stderr

        # A certificate from another federation's CA: the TLS handshake fails.
        foreign = _create_foreign(tmp_path, workspace)
        unreachable = fx(
            "collaborator", "start", "--name", "site-1", "--connect-timeout", "3", cwd=foreign
        )
        assert unreachable.returncode == 5, unreachable.stdout + unreachable.stderr
        assert "closed the TLS handshake" in unreachable.stderr
        assert "Traceback" not in unreachable.stderr

        collaborators = [
            fx_start(
                "collaborator", "start", "--name", name, cwd=workspace, log=tmp_path / f"{name}.log"
            )
            for name in ("site-1", "site-2")
        ]
        for name, process in zip(("site-1", "site-2"), collaborators, strict=True):
            code, output = finish(process, tmp_path / f"{name}.log")
            assert code == 0, output
            assert "federation finished" in output
        code, output = finish(aggregator, tmp_path / "agg.log")
        assert code == 0, output
    finally:
        if aggregator.poll() is None:
            aggregator.kill()

    assert "final" in output and "Federation finished" in output
    agg_log = (workspace / "logs" / "aggregator.log").read_text()
    assert "does not match claimed sender" in agg_log

    records = [
        json.loads(line) for line in (workspace / "logs" / "metrics.jsonl").read_text().splitlines()
    ]
    accuracy = [r for r in records if r["source"] == "aggregator" and r["name"] == "accuracy"]
    assert [r["round"] for r in accuracy] == [0, 1, 2, 3, 4, 5]
    assert accuracy[-1]["value"] >= 0.9
    assert {r["source"] for r in records} == {"aggregator", "site-1", "site-2"}

    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    last = load_file(str(workspace / "save" / "last.safetensors"))
    best = load_file(str(workspace / "save" / "best.safetensors"))
    init = load_file(str(workspace / "save" / "init.safetensors"))
    assert last.keys() == init.keys() == best.keys()
    assert any(not torch.equal(last[k], init[k]) for k in init)
    int_buffers = [k for k, v in last.items() if v.dtype == torch.int64]
    assert int_buffers, "BatchNorm's num_batches_tracked should stay int64"


def _create_impostor(tmp_path: Path, workspace: Path) -> Path:
    impostor = tmp_path / "impostor"
    shutil.copytree(workspace, impostor, ignore=shutil.ignore_patterns("logs", "save"))
    client = impostor / "cert" / "client"
    shutil.copy(client / "site-2.crt", client / "site-1.crt")
    shutil.copy(client / "site-2.key", client / "site-1.key")
    return impostor


def _create_foreign(tmp_path: Path, workspace: Path) -> Path:
    """Same plan, but certificates from a CA of its own (the server is still trusted)."""
    foreign = tmp_path / "foreign"
    shutil.copytree(workspace, foreign, ignore=shutil.ignore_patterns("logs", "save", "cert"))
    certify = fx("pki", "certify", cwd=foreign)
    assert certify.returncode == 0, certify.stderr
    shutil.copy(workspace / "cert" / "cert_chain.pem", foreign / "cert" / "cert_chain.pem")
    return foreign
