"""Real mutual-TLS handshakes (Python's ssl over a socket on 127.0.0.1) with fx certificates."""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from fx.pki.builder import utc_now
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
from fx.workspace.paths import WorkspacePaths

pytestmark = pytest.mark.integration

TIMEOUT_S = 10


def make_workspace(root: Path) -> WorkspacePaths:
    (root / "plan").mkdir(parents=True)
    (root / "plan" / "plan.yaml").write_text("# stub: the PKI does not read the plan\n")
    return WorkspacePaths(root)


@dataclass(frozen=True)
class Credentials:
    """Files a TLS context loads."""

    key: Path
    cert: Path
    chain: Path


def write_credentials(directory: Path, key: bytes, cert: bytes, chain: bytes) -> Credentials:
    directory.mkdir(parents=True, exist_ok=True)
    credentials = Credentials(directory / "key.pem", directory / "cert.pem", directory / "ca.pem")
    credentials.key.write_bytes(key)
    credentials.cert.write_bytes(cert)
    credentials.chain.write_bytes(chain)
    return credentials


def server_context(credentials: Credentials, *, crl: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(credentials.cert, credentials.key)
    context.load_verify_locations(cafile=credentials.chain)
    if crl is not None:
        context.load_verify_locations(cafile=crl)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def client_context(credentials: Credentials) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its name
    context.load_cert_chain(credentials.cert, credentials.key)
    context.load_verify_locations(cafile=credentials.chain)
    return context


@dataclass
class Outcome:
    server_error: Exception | None = None
    client_error: Exception | None = None
    echoed: bytes = b""

    @property
    def accepted(self) -> bool:
        return self.server_error is None and self.client_error is None and self.echoed == b"ping"

    @property
    def refused_by_server(self) -> bool:
        return isinstance(self.server_error, ssl.SSLError) and self.echoed != b"ping"


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, *, server_hostname: str = "localhost"
) -> Outcome:
    """One connection: the server echoes 4 bytes once both sides accepted each other."""
    outcome = Outcome()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT_S)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            connection, _ = listener.accept()
            connection.settimeout(TIMEOUT_S)
            with server.wrap_socket(connection, server_side=True) as tls:
                tls.sendall(tls.recv(4))
        except (OSError, ssl.SSLError) as exc:
            outcome.server_error = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as raw,
            client.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            tls.sendall(b"ping")
            outcome.echoed = tls.recv(4)
    except (OSError, ssl.SSLError) as exc:
        outcome.client_error = exc
    finally:
        thread.join(TIMEOUT_S)
        listener.close()
    return outcome


@pytest.fixture
def federation(tmp_path: Path) -> WorkspacePaths:
    paths = make_workspace(tmp_path / "fed")
    certify_workspace(paths, aggregator_hosts=["localhost"], collaborators=["site-a", "site-b"])
    return paths


@pytest.fixture
def aggregator(federation: WorkspacePaths, tmp_path: Path) -> Credentials:
    return write_credentials(tmp_path / "agg", *require_aggregator_credentials(federation))


def collaborator(paths: WorkspacePaths, name: str, directory: Path) -> Credentials:
    return write_credentials(directory, *require_collaborator_credentials(paths, name))


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_mutual_tls_with_certify_certificates(
    federation: WorkspacePaths, aggregator: Credentials, tmp_path: Path, server_hostname: str
) -> None:
    site = collaborator(federation, "site-a", tmp_path / "site-a")
    outcome = handshake(
        server_context(aggregator), client_context(site), server_hostname=server_hostname
    )
    assert outcome.accepted, outcome


def test_server_sees_the_collaborator_identity(
    federation: WorkspacePaths, aggregator: Credentials, tmp_path: Path
) -> None:
    from fx.pki.identity import certificate_identities

    seen: list[list[str]] = []
    server = server_context(aggregator)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT_S)

    def serve() -> None:
        connection, _ = listener.accept()
        with server.wrap_socket(connection, server_side=True) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            seen.append(certificate_identities(ssl.DER_cert_to_PEM_cert(der).encode()))
            tls.sendall(tls.recv(4))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    site = client_context(collaborator(federation, "site-b", tmp_path / "site-b"))
    with (
        socket.create_connection(listener.getsockname(), timeout=TIMEOUT_S) as raw,
        site.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"ping")
        assert tls.recv(4) == b"ping"
    thread.join(TIMEOUT_S)
    listener.close()
    assert seen == [["site-b"]]


def test_client_certificate_from_another_ca_is_refused(
    aggregator: Credentials, federation: WorkspacePaths, tmp_path: Path
) -> None:
    rogue = make_workspace(tmp_path / "rogue")
    certify_workspace(rogue, aggregator_hosts=["localhost"], collaborators=["site-a"])
    key, cert, _ = require_collaborator_credentials(rogue, "site-a")
    # It trusts the real aggregator, but its own certificate comes from another CA.
    impostor = write_credentials(
        tmp_path / "impostor", key, cert, federation.cert_chain.read_bytes()
    )
    outcome = handshake(server_context(aggregator), client_context(impostor))
    assert outcome.refused_by_server, outcome
    assert "certificate verify failed" in str(outcome.server_error)


def test_server_certificate_used_as_client_certificate_is_refused(
    aggregator: Credentials, tmp_path: Path
) -> None:
    outcome = handshake(server_context(aggregator), client_context(aggregator))
    assert outcome.refused_by_server, outcome
    assert "certificate purpose" in str(outcome.server_error)  # unsuitable: EKU serverAuth


def test_collaborator_certificate_cannot_serve(
    federation: WorkspacePaths, aggregator: Credentials, tmp_path: Path
) -> None:
    site = collaborator(federation, "site-a", tmp_path / "site-a")
    outcome = handshake(server_context(site), client_context(site))
    assert not outcome.accepted
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError), outcome


def test_expired_client_certificate_is_refused(
    federation: WorkspacePaths, aggregator: Credentials, tmp_path: Path
) -> None:
    ca = load_ca(federation)
    assert ca is not None
    key = KeyType.ECDSA_P384.generate()
    start = utc_now() - timedelta(days=30)
    expired = ca.signing.issue_cert(
        key.public_key(),
        role=Role.COLLABORATOR,
        name="site-a",
        not_before=start,
        not_after=start + timedelta(days=1),
    )
    stale = write_credentials(
        tmp_path / "stale",
        private_key_pem(key).data,
        certificate_pem(expired, ca.signing.cert).data,
        federation.cert_chain.read_bytes(),
    )
    outcome = handshake(server_context(aggregator), client_context(stale))
    assert outcome.refused_by_server, outcome
    assert "certificate has expired" in str(outcome.server_error)


def test_wrong_server_name_is_refused(
    federation: WorkspacePaths, aggregator: Credentials, tmp_path: Path
) -> None:
    site = collaborator(federation, "site-a", tmp_path / "site-a")
    outcome = handshake(
        server_context(aggregator), client_context(site), server_hostname="elsewhere.example"
    )
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError), outcome


def test_openssl_enforces_the_crl_fx_writes(
    federation: WorkspacePaths, aggregator: Credentials, tmp_path: Path
) -> None:
    site = collaborator(federation, "site-a", tmp_path / "site-a")
    assert handshake(server_context(aggregator, crl=federation.crl), client_context(site)).accepted
    revoke(federation, "site-a")
    outcome = handshake(server_context(aggregator, crl=federation.crl), client_context(site))
    assert outcome.refused_by_server, outcome
    assert "certificate revoked" in str(outcome.server_error)
