"""What the aggregator refuses, over real mutual TLS against the real gRPC server.

Each test runs fx's gRPC server in this process (built as `fx aggregator start`
builds it) and drives it with the collaborator's GrpcAggregatorClient. Refusals
come in two kinds:

- in the TLS handshake (a certificate from another CA, expired, of the wrong
  role): gRPC's C core refuses before any Python code runs; the client only sees
  the connection close, retries until connect_timeout_s, and then says the
  aggregator closed the handshake. The aggregator's record of it comes from
  gRPC core's stderr, turned into a log record by fx.transport.grpc.core_log.
- in the admission interceptor (identity != claimed sender, not in cols.yaml,
  revoked, an unusable CRL): an immediate RefusedError with the reason, which
  the aggregator logs.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from fx.errors import AggregatorUnreachable, FxError, RefusedError
from fx.pki.builder import utc_now
from fx.pki.ca import CertificateAuthority
from fx.pki.crl import build_crl, crl_pem
from fx.pki.keys import KeyType, private_key_pem
from fx.pki.lifecycle import revoke
from fx.pki.pem import certificate_pem
from fx.pki.roles import Role
from fx.pki.store import load_ca
from fx.pki.workspace import (
    certify_workspace,
    require_aggregator_credentials,
    require_collaborator_credentials,
)
from fx.plan.loader import load_plan
from fx.transport.grpc.client import ClientSettings, GrpcAggregatorClient
from fx.transport.grpc.core_log import capture_core_log
from fx.workspace.paths import WorkspacePaths
from tests.conftest import free_port
from tests.integration.fxproc import finish, fx, fx_start, wait_for
from tests.integration.served import certified_workspace, serve

pytestmark = pytest.mark.integration

Tls = tuple[bytes, bytes, bytes]  # (key, certificate chain, roots) PEM, as the client takes them

CONNECT_TIMEOUT_S = 2.0
# A TLS-level refusal is retried until CONNECT_TIMEOUT_S; the error must follow promptly.
TLS_REFUSAL_WITHIN_S = CONNECT_TIMEOUT_S + 4.0
# An admission refusal is one round trip: no retries, so well inside the retry window.
ADMISSION_REFUSAL_WITHIN_S = CONNECT_TIMEOUT_S - 0.5
CLOSED_HANDSHAKE = "is reachable but closed the TLS handshake"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> WorkspacePaths:
    """A certified numpy-template workspace with site-1 and site-2 (copied per test)."""
    return certified_workspace(tmp_path_factory.mktemp("pristine") / "fed", rounds=1)


@pytest.fixture
def workspace(pristine: WorkspacePaths, tmp_path: Path) -> WorkspacePaths:
    shutil.copytree(pristine.root, tmp_path / "fed")
    return WorkspacePaths(tmp_path / "fed")


@contextlib.contextmanager
def serving(paths: WorkspacePaths, *, server_tls: Tls | None = None) -> Iterator[str]:
    """The aggregator's gRPC server with its admission and CRL as `fx aggregator start`
    wires them; yields its target. ``server_tls`` replaces the aggregator's credentials."""
    with serve(paths, server_tls=server_tls) as served:
        yield f"127.0.0.1:{served.port}"


@contextlib.contextmanager
def connected(
    paths: WorkspacePaths, target: str, *, name: str, tls: Tls
) -> Iterator[GrpcAggregatorClient]:
    """A collaborator client claiming to be ``name``, presenting ``tls``."""
    plan = load_plan(paths)
    settings = ClientSettings(
        target=target,
        name=name,
        federation_id=plan.federation_id,
        chunk_bytes=plan.network.chunk_bytes,
        keepalive_s=plan.network.keepalive_s,
        connect_timeout_s=CONNECT_TIMEOUT_S,
        retry_max_backoff_s=0.5,
    )
    client = GrpcAggregatorClient(settings, tls=tls)
    try:
        yield client
    finally:
        client.close()


@dataclass
class Refused:
    error: FxError
    seconds: float


def refused_describe(paths: WorkspacePaths, target: str, *, name: str, tls: Tls) -> Refused:
    with connected(paths, target, name=name, tls=tls) as client:
        started = time.monotonic()
        with pytest.raises((RefusedError, AggregatorUnreachable)) as caught:
            client.describe()
        return Refused(caught.value, time.monotonic() - started)


def logged(caplog: pytest.LogCaptureFixture, logger: str, pattern: str) -> list[str]:
    """Messages of WARNING records from ``logger`` that match ``pattern``."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == logger
        and record.levelno == logging.WARNING
        and re.search(pattern, record.getMessage())
    ]


def expired_certificate(paths: WorkspacePaths, name: str) -> Tls:
    """A collaborator certificate for ``name`` from the federation's own CA, expired a
    month ago (require_collaborator_credentials would refuse to load it)."""
    ca = load_ca(paths)
    assert ca is not None
    key = KeyType.ECDSA_P384.generate()
    start = utc_now() - timedelta(days=31)
    cert = ca.signing.issue_cert(
        key.public_key(),
        role=Role.COLLABORATOR,
        name=name,
        not_before=start,
        not_after=start + timedelta(days=1),
    )
    chain = paths.cert_chain.read_bytes()
    return private_key_pem(key).data, certificate_pem(cert, ca.signing.cert).data, chain


# -- accepted -----------------------------------------------------------------------------


def test_a_valid_collaborator_is_admitted(workspace: WorkspacePaths) -> None:
    plan = load_plan(workspace)
    tls = require_collaborator_credentials(workspace, "site-1")
    with serving(workspace) as target, connected(workspace, target, name="site-1", tls=tls) as c:
        description = c.describe()
        assignment = c.get_tasks(wait_s=0)
    assert description.federation_id == plan.federation_id
    assert description.collaborators == ("site-1", "site-2")
    assert assignment.round == 0 and not assignment.done
    assert [task.kind for task in assignment.tasks] == ["validate", "train"]


# -- refused in the TLS handshake ---------------------------------------------------------


def assert_closed_handshake(refused: Refused) -> None:
    assert isinstance(refused.error, AggregatorUnreachable), refused.error
    assert CLOSED_HANDSHAKE in refused.error.message
    assert refused.error.hint is not None and "fx pki show site-1" in refused.error.hint
    assert "another CA" in refused.error.hint and "expired" in refused.error.hint
    # Retried for connect_timeout_s (a closed handshake may be a restarting aggregator), no more.
    assert CONNECT_TIMEOUT_S - 0.5 <= refused.seconds < TLS_REFUSAL_WITHIN_S


def test_a_certificate_from_another_ca_is_refused(
    workspace: WorkspacePaths, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rogue = WorkspacePaths(tmp_path / "rogue")
    rogue.plan_dir.mkdir(parents=True)
    certify_workspace(rogue, aggregator_hosts=["localhost"], collaborators=["site-1"])
    key, cert, _ = require_collaborator_credentials(rogue, "site-1")
    # It trusts the real aggregator; only its own certificate is from the other CA.
    tls = (key, cert, workspace.cert_chain.read_bytes())
    with capture_core_log(), serving(workspace) as target:
        refused = refused_describe(workspace, target, name="site-1", tls=tls)
    assert_closed_handshake(refused)
    assert logged(
        caplog,
        "grpc.core",
        r"^TLS handshake refused: .*unable to get local issuer certificate "
        r"\(likely a certificate from another CA\)",
    )


def test_an_expired_certificate_is_refused(
    workspace: WorkspacePaths, caplog: pytest.LogCaptureFixture
) -> None:
    tls = expired_certificate(workspace, "site-1")
    with capture_core_log(), serving(workspace) as target:
        refused = refused_describe(workspace, target, name="site-1", tls=tls)
    assert_closed_handshake(refused)
    assert logged(caplog, "grpc.core", r"certificate has expired \(likely an expired certificate\)")


def test_the_aggregator_certificate_cannot_be_used_by_a_client(
    workspace: WorkspacePaths, caplog: pytest.LogCaptureFixture
) -> None:
    tls = require_aggregator_credentials(workspace)  # EKU serverAuth, not clientAuth
    with capture_core_log(), serving(workspace) as target:
        refused = refused_describe(workspace, target, name="site-1", tls=tls)
    assert_closed_handshake(refused)
    assert logged(
        caplog,
        "grpc.core",
        r"unsupported certificate purpose \(likely a certificate of the wrong role\)",
    )


def test_a_collaborator_certificate_cannot_serve(workspace: WorkspacePaths) -> None:
    key, cert, chain = require_collaborator_credentials(workspace, "site-2")
    tls = require_collaborator_credentials(workspace, "site-1")
    with serving(workspace, server_tls=(key, cert, chain)) as target:
        refused = refused_describe(workspace, target, name="site-1", tls=tls)
    # This time the client refuses, and says why.
    assert isinstance(refused.error, AggregatorUnreachable), refused.error
    assert "this collaborator refused the certificate of the aggregator" in refused.error.message
    assert "unsupported certificate purpose" in refused.error.message
    assert refused.error.hint is not None and "server certificate" in refused.error.hint
    assert refused.seconds < TLS_REFUSAL_WITHIN_S


def test_nobody_listening_is_told_apart_from_a_refusal(workspace: WorkspacePaths) -> None:
    tls = require_collaborator_credentials(workspace, "site-1")
    refused = refused_describe(workspace, f"localhost:{free_port()}", name="site-1", tls=tls)
    assert isinstance(refused.error, AggregatorUnreachable), refused.error
    assert "did not answer for 2s: nothing is listening there" in refused.error.message
    assert CLOSED_HANDSHAKE not in refused.error.message
    assert refused.error.hint is not None and "fx aggregator start" in refused.error.hint
    assert refused.seconds < TLS_REFUSAL_WITHIN_S


# -- refused by admission (a valid certificate, but not allowed) --------------------------


def assert_refused_at_once(refused: Refused, reason: str) -> None:
    assert isinstance(refused.error, RefusedError), refused.error
    assert re.search(reason, refused.error.message), refused.error.message
    assert refused.seconds < ADMISSION_REFUSAL_WITHIN_S


def test_an_identity_other_than_the_claimed_sender_is_refused(
    workspace: WorkspacePaths, caplog: pytest.LogCaptureFixture
) -> None:
    tls = require_collaborator_credentials(workspace, "site-2")
    with serving(workspace) as target:
        refused = refused_describe(workspace, target, name="site-1", tls=tls)
    reason = "certificate identity site-2 does not match claimed sender 'site-1'"
    assert_refused_at_once(refused, reason)
    assert refused.error.hint is not None and "fx pki show site-1" in refused.error.hint
    assert logged(caplog, "fx.transport.grpc.interceptor", rf"from site-1 .*: {reason}")


def test_a_valid_certificate_not_in_cols_yaml_is_refused(
    workspace: WorkspacePaths, caplog: pytest.LogCaptureFixture
) -> None:
    certify_workspace(workspace, aggregator_hosts=[], collaborators=["site-9"])  # CA-issued
    tls = require_collaborator_credentials(workspace, "site-9")
    with serving(workspace) as target:
        refused = refused_describe(workspace, target, name="site-9", tls=tls)
    reason = "'site-9' is not a collaborator in plan/cols.yaml"
    assert_refused_at_once(refused, reason)
    assert logged(caplog, "fx.transport.grpc.interceptor", rf"from site-9 .*: {reason}")


def test_revocation_applies_to_the_next_call_without_a_restart(
    workspace: WorkspacePaths, caplog: pytest.LogCaptureFixture
) -> None:
    tls = require_collaborator_credentials(workspace, "site-1")
    with serving(workspace) as target, connected(workspace, target, name="site-1", tls=tls) as c:
        assert c.get_tasks(wait_s=0).round == 0
        revoke(workspace, "site-1", reason=x509.ReasonFlags.key_compromise)
        started = time.monotonic()
        with pytest.raises(RefusedError) as caught:
            c.get_tasks(wait_s=0)  # same client, same channel: only the CRL changed
        seconds = time.monotonic() - started
        other = require_collaborator_credentials(workspace, "site-2")
        with connected(workspace, target, name="site-2", tls=other) as d:
            assert d.get_tasks(wait_s=0).round == 0  # the others are unaffected
    assert_refused_at_once(Refused(caught.value, seconds), r"certificate of 'site-1' .* is revoked")
    assert caught.value.hint is not None and "not revoked" in caught.value.hint
    assert logged(caplog, "fx.transport.grpc.interceptor", r"from site-1 .*is revoked")


# -- a CRL that cannot be trusted refuses everyone (fail closed) ------------------------


def test_an_unreadable_crl_refuses_instead_of_admitting(
    workspace: WorkspacePaths, caplog: pytest.LogCaptureFixture
) -> None:
    tls = require_collaborator_credentials(workspace, "site-1")
    good_crl = workspace.crl.read_bytes()
    with serving(workspace) as target, connected(workspace, target, name="site-1", tls=tls) as c:
        assert c.get_tasks(wait_s=0).round == 0
        workspace.crl.write_bytes(b"-----BEGIN X509 CRL-----\nnot a CRL\n-----END X509 CRL-----\n")
        with pytest.raises(RefusedError) as caught:
            c.get_tasks(wait_s=0)
        workspace.crl.write_bytes(good_crl)  # fixed on disk: admitted again, no restart
        assert c.get_tasks(wait_s=0).round == 0
    assert "cannot check whether the certificate of 'site-1' is revoked" in caught.value.message
    assert "not a readable PEM CRL" in caught.value.message
    assert logged(caplog, "fx.transport.grpc.interceptor", r"cannot check .* not a readable")


def test_a_crl_signed_by_another_ca_refuses_instead_of_admitting(
    workspace: WorkspacePaths, caplog: pytest.LogCaptureFixture
) -> None:
    tls = require_collaborator_credentials(workspace, "site-1")
    ca = load_ca(workspace)
    assert ca is not None
    # A forgery that names the real signing CA as issuer, signed by another key.
    forger = CertificateAuthority.create_root(organization="forger")
    forged = CertificateAuthority(cert=ca.signing.cert, key=forger.key)
    with serving(workspace) as target, connected(workspace, target, name="site-1", tls=tls) as c:
        crl_pem(build_crl(forged, [], number=99)).write_to_path(workspace.crl)
        with pytest.raises(RefusedError) as caught:
            c.describe()
    assert "not signed by the federation's signing CA" in caught.value.message
    assert logged(caplog, "fx.transport.grpc.interceptor", r"not signed by the federation")


# -- `fx aggregator start`: TLS refusals reach its log and console, readable ---------------


def test_fx_aggregator_start_logs_tls_refusals_with_their_reason(tmp_path: Path) -> None:
    created = fx(
        "workspace",
        "create",
        "--template",
        "numpy_logreg_digits",
        "--prefix",
        "fed",
        "--collaborators",
        "1",
        "--rounds",
        "1",
        "--agg-port",
        str(free_port()),
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    workspace = tmp_path / "fed"
    assert fx("pki", "certify", cwd=workspace).returncode == 0
    # Same plan and data, certificates from a CA of its own; it trusts the real aggregator.
    foreign = tmp_path / "foreign"
    shutil.copytree(workspace, foreign, ignore=shutil.ignore_patterns("cert", "logs", "save"))
    assert fx("pki", "certify", cwd=foreign).returncode == 0
    shutil.copy(workspace / "cert" / "cert_chain.pem", foreign / "cert" / "cert_chain.pem")

    console_log = tmp_path / "aggregator.out"
    aggregator = fx_start("aggregator", "start", cwd=workspace, log=console_log)
    try:
        wait_for(console_log, "Aggregator listening", timeout=30)
        refused = fx(
            "collaborator", "start", "--name", "site-1", "--connect-timeout", "3", cwd=foreign
        )
        joined = fx("collaborator", "start", "--name", "site-1", cwd=workspace, timeout=60)
        code, console = finish(aggregator, console_log, timeout=30)
    finally:
        if aggregator.poll() is None:
            aggregator.kill()

    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert CLOSED_HANDSHAKE in refused.stderr and "Traceback" not in refused.stderr
    assert joined.returncode == 0, joined.stdout + joined.stderr
    # The refusal did not disturb the federation, and the aggregator exits cleanly.
    assert code == 0, console
    assert "Federation finished" in console

    reason = (
        "TLS handshake refused: CERTIFICATE_VERIFY_FAILED: unable to get local issuer "
        "certificate (likely a certificate from another CA)"
    )
    log_lines = (workspace / "logs" / "aggregator.log").read_text().splitlines()
    assert any(
        line.endswith(f" WARNING grpc.core [fx-grpc-core-log] {reason}") for line in log_lines
    )
    # The console shows the readable line, not gRPC core's raw one.
    assert re.search(rf"^WARNING +{re.escape(reason)}", console, re.MULTILINE), console
    assert "ssl_transport_security" not in console and "Handshake failed" not in console
