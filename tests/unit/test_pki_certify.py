"""certify_workspace on one box: files, modes, idempotence, and the credentials it yields."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fx.errors import PkiError
from fx.pki.crl import RevocationList
from fx.pki.identity import certificate_identities, certificate_serial
from fx.pki.pem import load_certificates, read_certificate, read_certificates
from fx.pki.store import CaFiles, load_ca
from fx.pki.workspace import (
    certify_workspace,
    init_ca,
    require_aggregator_credentials,
    require_collaborator_credentials,
)
from fx.workspace.paths import WorkspacePaths


def make_workspace(root: Path) -> WorkspacePaths:
    (root / "plan").mkdir(parents=True)
    (root / "plan" / "plan.yaml").write_text("# stub: the PKI does not read the plan\n")
    return WorkspacePaths(root)


@pytest.fixture
def paths(tmp_path: Path) -> WorkspacePaths:
    return make_workspace(tmp_path / "fed")


def certify(paths: WorkspacePaths, *collaborators: str) -> list[str]:
    report = certify_workspace(
        paths, aggregator_hosts=["localhost"], collaborators=list(collaborators)
    )
    return [entry.what for entry in report.created]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_certify_writes_the_whole_pki(paths: WorkspacePaths) -> None:
    created = certify(paths, "site-a", "site-b")
    assert created == [
        "root CA",
        "signing CA",
        "chain of trust",
        "revocation list",
        "aggregator",
        "collaborator site-a",
        "collaborator site-b",
    ]
    files = CaFiles.of(paths)
    for path in (*files.all(), paths.cert_chain, paths.crl, paths.aggregator_cert()):
        assert path.is_file(), path
    for name in ("site-a", "site-b"):
        assert paths.collaborator_cert(name).is_file()
        assert paths.collaborator_key(name).is_file()
    ca = load_ca(paths)
    assert ca is not None
    chain = read_certificates(paths.cert_chain)
    assert chain == [ca.signing.cert, ca.root.cert]
    assert RevocationList(paths.crl).revoked_serials() == frozenset()


def test_keys_are_readable_by_their_owner_only(paths: WorkspacePaths) -> None:
    certify(paths, "site-a")
    files = CaFiles.of(paths)
    for key in (
        files.root_key,
        files.signing_key,
        paths.aggregator_key(),
        paths.collaborator_key("site-a"),
    ):
        assert mode(key) == 0o600, key
    assert mode(files.directory) == 0o700
    assert mode(paths.aggregator_cert()) == 0o644
    assert not list(paths.cert.rglob("*.tmp"))


def test_certify_again_keeps_what_exists_and_adds_what_is_missing(paths: WorkspacePaths) -> None:
    certify(paths, "site-a")
    before = {
        path: certificate_serial(path.read_bytes())
        for path in (paths.aggregator_cert(), paths.collaborator_cert("site-a"))
    }
    key_before = paths.collaborator_key("site-a").read_bytes()
    chain_before = paths.cert_chain.read_bytes()

    report = certify_workspace(
        paths, aggregator_hosts=["localhost"], collaborators=["site-a", "site-b"]
    )

    assert [entry.what for entry in report.created] == ["collaborator site-b"]
    assert [entry.what for entry in report.kept] == [
        "root CA",
        "signing CA",
        "chain of trust",
        "revocation list",
        "aggregator",
        "collaborator site-a",
    ]
    assert report.warnings == []
    for path, serial in before.items():
        assert certificate_serial(path.read_bytes()) == serial
    assert paths.collaborator_key("site-a").read_bytes() == key_before
    assert paths.cert_chain.read_bytes() == chain_before
    new = read_certificate(paths.collaborator_cert("site-b"))
    ca = load_ca(paths)
    assert ca is not None
    new.verify_directly_issued_by(ca.signing.cert)


def test_certify_issues_a_certificate_for_an_existing_key(paths: WorkspacePaths) -> None:
    certify(paths, "site-a")
    key = paths.collaborator_key("site-a").read_bytes()
    paths.collaborator_cert("site-a").unlink()
    assert certify(paths, "site-a") == ["collaborator site-a (for its existing key)"]
    assert paths.collaborator_key("site-a").read_bytes() == key
    require_collaborator_credentials(paths, "site-a")


def test_certify_warns_when_the_aggregator_hosts_changed(paths: WorkspacePaths) -> None:
    certify(paths)
    report = certify_workspace(paths, aggregator_hosts=["agg.example.org"], collaborators=[])
    assert any("does not cover agg.example.org" in warning for warning in report.warnings)


def test_certify_refuses_bad_names_before_writing(paths: WorkspacePaths) -> None:
    with pytest.raises(PkiError, match="not a safe identity name"):
        certify(paths, "../etc")
    with pytest.raises(PkiError, match="reserved for the aggregator"):
        certify(paths, "aggregator")
    assert not paths.cert.exists()


def test_a_workspace_trusting_a_foreign_ca_is_not_given_a_new_one(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    paths.cert.mkdir()
    other = make_workspace(tmp_path / "other")
    certify(other)
    paths.cert_chain.write_bytes(other.cert_chain.read_bytes())
    with pytest.raises(PkiError, match="trusts a CA kept elsewhere") as raised:
        certify(paths, "site-a")
    assert raised.value.hint is not None and "fx pki csr" in raised.value.hint


def test_incomplete_ca_is_refused(paths: WorkspacePaths) -> None:
    init_ca(paths)
    CaFiles.of(paths).signing_key.unlink()
    with pytest.raises(PkiError, match="incomplete CA"):
        certify(paths)


def test_rsa_workspace(paths: WorkspacePaths) -> None:
    from fx.pki.keys import KeyType

    certify_workspace(
        paths, aggregator_hosts=["localhost"], collaborators=["site-a"], key_type=KeyType.RSA_3072
    )
    ca = load_ca(paths)
    assert ca is not None
    assert ca.root.key_type is KeyType.RSA_3072
    assert b"BEGIN PRIVATE KEY" in paths.collaborator_key("site-a").read_bytes()


def test_aggregator_credentials(paths: WorkspacePaths) -> None:
    certify(paths, "site-a")
    key, cert, chain = require_aggregator_credentials(paths)
    assert b"PRIVATE KEY" in key
    assert certificate_identities(cert) == ["localhost", "127.0.0.1", "::1"]
    presented = load_certificates(cert, "cert")
    trusted = load_certificates(chain, "chain")
    assert len(presented) == 2  # the leaf and the signing CA a peer needs to build the path
    assert presented[1] == trusted[0]
    assert chain == paths.cert_chain.read_bytes()


def test_collaborator_credentials(paths: WorkspacePaths) -> None:
    certify(paths, "site-a")
    _, cert, _ = require_collaborator_credentials(paths, "site-a")
    assert certificate_identities(cert) == ["site-a"]


def test_missing_credentials_name_the_file_and_the_fix(paths: WorkspacePaths) -> None:
    with pytest.raises(PkiError) as raised:
        require_aggregator_credentials(paths)
    assert str(paths.aggregator_key()) in raised.value.message
    assert raised.value.hint is not None and "fx pki certify" in raised.value.hint

    certify(paths, "site-a")
    with pytest.raises(PkiError) as raised:
        require_collaborator_credentials(paths, "site-b")
    assert str(paths.collaborator_key("site-b")) in raised.value.message
    assert raised.value.hint is not None and "fx pki certify" in raised.value.hint


def test_mismatched_key_is_named(paths: WorkspacePaths) -> None:
    certify(paths, "site-a", "site-b")
    paths.collaborator_key("site-a").write_bytes(paths.collaborator_key("site-b").read_bytes())
    with pytest.raises(PkiError, match="is not the key of"):
        require_collaborator_credentials(paths, "site-a")
