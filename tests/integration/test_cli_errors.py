"""Errors a user can cause end with one clear message, a documented exit code and no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fx.errors import ExitCode
from tests.conftest import free_port
from tests.integration.fxproc import finish, fx, fx_start

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    port = free_port()
    created = fx(
        "workspace",
        "create",
        "--template",
        "numpy_logreg_digits",
        "--prefix",
        "fed",
        "--agg-addr",
        "127.0.0.1",
        "--agg-port",
        str(port),
        cwd=root,
    )
    assert created.returncode == 0, created.stderr
    assert fx("pki", "certify", cwd=root / "fed").returncode == 0
    return root / "fed"


def _assert_clean_failure(
    result: subprocess.CompletedProcess[str], code: ExitCode, *needles: str
) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_no_workspace(tmp_path: Path) -> None:
    result = fx("aggregator", "start", cwd=tmp_path)
    _assert_clean_failure(
        result, ExitCode.WORKSPACE, "is not an fx workspace", "fx workspace create"
    )


def test_create_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    result = fx("workspace", "create", "--prefix", "taken", cwd=tmp_path)
    _assert_clean_failure(result, ExitCode.WORKSPACE, "not empty", "refusing to overwrite")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_unknown_template(tmp_path: Path) -> None:
    result = fx("workspace", "create", "--template", "nope", "--prefix", "x", cwd=tmp_path)
    _assert_clean_failure(result, ExitCode.WORKSPACE, "unknown template 'nope'", "torch_cnn_digits")
    assert not (tmp_path / "x").exists()


def test_bad_plan_names_file_key_and_expectation(workspace: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(workspace, broken)
    plan = yaml.safe_load((broken / "plan" / "plan.yaml").read_text())
    plan["aggregator"]["rounds_to_train"] = "five"
    (broken / "plan" / "plan.yaml").write_text(yaml.safe_dump(plan))
    result = fx("aggregator", "start", cwd=broken)
    _assert_clean_failure(
        result,
        ExitCode.PLAN,
        "plan/plan.yaml",
        "aggregator.rounds_to_train",
        "not of type 'integer'",
    )


def test_unknown_collaborator_name(workspace: Path) -> None:
    result = fx("collaborator", "start", "--name", "site-9", cwd=workspace)
    _assert_clean_failure(result, ExitCode.PLAN, "no collaborator named 'site-9'", "site-1, site-2")


def test_missing_certificates(workspace: Path, tmp_path: Path) -> None:
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(workspace, bare, ignore=shutil.ignore_patterns("cert"))
    result = fx("aggregator", "start", cwd=bare)
    _assert_clean_failure(result, ExitCode.PKI, "aggregator", "fx pki certify")
    result = fx("collaborator", "start", "--name", "site-1", cwd=bare)
    _assert_clean_failure(result, ExitCode.PKI, "site-1", "fx pki certify")


def test_unreachable_aggregator_gives_up_in_bounded_time(workspace: Path) -> None:
    started = time.monotonic()
    result = fx(
        "collaborator", "start", "--name", "site-1", "--connect-timeout", "2", cwd=workspace
    )
    _assert_clean_failure(result, ExitCode.NETWORK, "did not answer for 2s", "fx aggregator start")
    assert time.monotonic() - started < 30


def test_port_in_use_fails_at_once(workspace: Path, tmp_path: Path) -> None:
    first = fx_start("aggregator", "start", cwd=workspace, log=tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 30
        while "listening" not in (tmp_path / "first.log").read_text():
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        second = fx("aggregator", "start", cwd=workspace, timeout=30)
        _assert_clean_failure(second, ExitCode.NETWORK, "cannot listen", "in use")
        assert time.monotonic() - started < 15
        assert first.poll() is None  # the first one is unaffected
    finally:
        first.terminate()
        finish(first, tmp_path / "first.log")


def test_aggregator_binds_only_the_plan_address(workspace: Path, tmp_path: Path) -> None:
    """Bound to 127.0.0.1 only: the same port on another loopback address stays free."""
    port = yaml.safe_load((workspace / "plan" / "plan.yaml").read_text())["network"]["agg_port"]
    process = fx_start("aggregator", "start", cwd=workspace, log=tmp_path / "agg.log")
    try:
        deadline = time.monotonic() + 30
        while "listening" not in (tmp_path / "agg.log").read_text():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.2", port))  # fails with EADDRINUSE if it had bound 0.0.0.0
    finally:
        process.terminate()
        finish(process, tmp_path / "agg.log")


def test_help_does_not_import_heavy_frameworks() -> None:
    code = (
        "import sys; from fx.cli.main import app; "
        "heavy = [m for m in ('torch', 'grpc', 'sklearn', 'safetensors') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_data_directory_names_data_yaml(workspace: Path, tmp_path: Path) -> None:
    import shutil

    site = tmp_path / "site"
    shutil.copytree(workspace, site, ignore=shutil.ignore_patterns("data"))
    result = fx("collaborator", "start", "--name", "site-1", cwd=site)
    _assert_clean_failure(result, ExitCode.PLAN, "plan/data.yaml", "data.site-1", "not a directory")
