"""A site joins from an exported workspace: export -> import -> CSR -> sign -> federation.

The aggregator's workspace keeps the CA and certifies only the aggregator; the one
collaborator runs in a workspace imported from the export, with a key made there
and signed by the CA from its CSR. A copy of that site whose plan says one more
round is refused at connect time, and the refusal names the key that differs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.integration.fxproc import finish, fx, fx_start

pytestmark = pytest.mark.integration

ROUNDS = 2


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _aggregator_workspace(tmp_path: Path, port: int) -> Path:
    _ok(
        fx(
            "workspace",
            "create",
            "--template",
            "numpy_logreg_digits",
            "--prefix",
            "fed",
            "--collaborators",
            "1",
            "--rounds",
            str(ROUNDS),
            "--agg-port",
            str(port),
            cwd=tmp_path,
        )
    )
    workspace = tmp_path / "fed"
    plan_file = workspace / "plan" / "plan.yaml"
    plan = yaml.safe_load(plan_file.read_text())
    plan["aggregator"]["linger_s"] = 2  # the federation is short; so is the goodbye
    plan_file.write_text(yaml.safe_dump(plan, sort_keys=False))
    _ok(fx("plan", "initialize", cwd=workspace))
    _ok(fx("pki", "certify", "--aggregator-only", cwd=workspace))
    return workspace


def _join_from_export(tmp_path: Path, workspace: Path) -> Path:
    """The site's side of the exchange, with the CA's side in between."""
    exported = _ok(
        fx("workspace", "export", "--output", str(tmp_path / "fed.fx.tar.gz"), cwd=workspace)
    )
    assert "fed.fx.tar.gz" in exported

    imported = _ok(fx("workspace", "import", "fed.fx.tar.gz", "--prefix", "site", cwd=tmp_path))
    site = tmp_path / "site"
    assert "fx pki csr --name site-1" in imported
    root = re.search(r"--root-fingerprint (\S+)", imported)
    assert root is not None, imported
    assert not list((site / "cert").rglob("*.key")), "an export must carry no key"

    request = _ok(fx("pki", "csr", "--name", "site-1", cwd=site))
    fingerprint = re.search(r"CSR fingerprint: (\S+)", request)
    assert fingerprint is not None, request
    bundle = tmp_path / "site-1.bundle.pem"
    csr = site / "cert" / "client" / "site-1.csr"
    _ok(
        fx(
            "pki",
            "sign",
            str(csr),
            "--fingerprint",
            fingerprint.group(1),
            "--out",
            str(bundle),
            cwd=workspace,
        )
    )
    _ok(fx("pki", "import", str(bundle), "--root-fingerprint", root.group(1), cwd=site))

    # The site's own data: here, the shard the template made for site-1.
    shutil.copytree(workspace / "data" / "site-1", site / "data" / "site-1")
    _ok(fx("plan", "validate", cwd=site))
    return site


def test_a_site_joins_from_an_exported_workspace(tmp_path: Path) -> None:
    port = free_port()
    workspace = _aggregator_workspace(tmp_path, port)
    site = _join_from_export(tmp_path, workspace)

    tampered = tmp_path / "tampered"
    shutil.copytree(site, tampered)
    plan_file = tampered / "plan" / "plan.yaml"
    plan_file.write_text(
        plan_file.read_text().replace(
            f"rounds_to_train: {ROUNDS}", f"rounds_to_train: {ROUNDS + 1}"
        )
    )

    aggregator = fx_start("aggregator", "start", cwd=workspace, log=tmp_path / "agg.log")
    try:
        refused = fx(
            "collaborator", "start", "--name", "site-1", "--connect-timeout", "20", cwd=tampered
        )
        assert refused.returncode == 6, refused.stdout + refused.stderr
        assert "differs from the aggregator's in: aggregator.rounds_to_train" in refused.stderr
        assert "Traceback" not in refused.stderr

        collaborator = fx_start(
            "collaborator", "start", "--name", "site-1", cwd=site, log=tmp_path / "site.log"
        )
        code, output = finish(collaborator, tmp_path / "site.log", timeout=60)
        assert code == 0, output
        assert "federation finished" in output
        code, output = finish(aggregator, tmp_path / "agg.log", timeout=60)
        assert code == 0, output
    finally:
        if aggregator.poll() is None:
            aggregator.kill()

    records = [
        json.loads(line) for line in (workspace / "logs" / "metrics.jsonl").read_text().splitlines()
    ]
    accuracy = [r for r in records if r["source"] == "aggregator" and r["name"] == "accuracy"]
    assert [r["round"] for r in accuracy] == list(range(ROUNDS + 1))
    assert accuracy[-1]["value"] > 0.5
    assert {r["source"] for r in records} == {"aggregator", "site-1"}
    # Both sides hold the record of what the federation started from, and it is true.
    record = (workspace / "plan" / "federation.json").read_text()
    assert (site / "plan" / "federation.json").read_text() == record
    init_model = workspace / json.loads(record)["init_model"]["path"]
    assert (
        hashlib.sha256(init_model.read_bytes()).hexdigest()
        == json.loads(record)["init_model"]["sha256"]
    )
