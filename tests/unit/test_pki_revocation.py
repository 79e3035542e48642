"""Revocation: revoke writes a signed CRL; RevocationList sees it without being recreated."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from cryptography import x509

from fx.errors import PkiError
from fx.pki.crl import RevocationList, load_crl, parse_reason, revocations
from fx.pki.identity import certificate_serial
from fx.pki.lifecycle import renew, revoke
from fx.pki.pem import read_certificate
from fx.pki.store import load_ca
from fx.pki.workspace import certify_workspace
from fx.workspace.paths import WorkspacePaths


def make_workspace(root: Path) -> WorkspacePaths:
    (root / "plan").mkdir(parents=True)
    (root / "plan" / "plan.yaml").write_text("# stub: the PKI does not read the plan\n")
    return WorkspacePaths(root)


@pytest.fixture
def paths(tmp_path: Path) -> WorkspacePaths:
    paths = make_workspace(tmp_path / "fed")
    certify_workspace(paths, aggregator_hosts=["localhost"], collaborators=["site-a", "site-b"])
    return paths


def serial_of(path: Path) -> int:
    return certificate_serial(path.read_bytes())


def test_missing_crl_means_nothing_revoked(tmp_path: Path) -> None:
    assert not RevocationList(tmp_path / "crl.pem").is_revoked(1)


def test_revoke_is_seen_by_a_running_list(paths: WorkspacePaths) -> None:
    revocation_list = RevocationList(paths.crl, chain=paths.cert_chain)
    site_a = serial_of(paths.collaborator_cert("site-a"))
    site_b = serial_of(paths.collaborator_cert("site-b"))
    assert not revocation_list.is_revoked(site_a)

    result = revoke(paths, "site-a", reason=x509.ReasonFlags.key_compromise)

    assert [info.serial for info in result.revoked] == [site_a]
    assert revocation_list.is_revoked(site_a)  # the same object: no restart needed
    assert not revocation_list.is_revoked(site_b)
    [entry] = revocations(load_crl(paths.crl.read_bytes(), paths.crl))
    assert entry.reason is x509.ReasonFlags.key_compromise

    revoke(paths, format(site_b, "X"))  # by serial
    assert revocation_list.is_revoked(site_b)
    assert revocation_list.is_revoked(site_a)


def test_crl_is_signed_by_the_signing_ca_and_numbered(paths: WorkspacePaths) -> None:
    ca = load_ca(paths)
    assert ca is not None
    first = load_crl(paths.crl.read_bytes(), paths.crl)
    revoke(paths, "site-a")
    second = load_crl(paths.crl.read_bytes(), paths.crl)
    assert second.is_signature_valid(ca.signing.cert.public_key())  # type: ignore[arg-type]
    assert second.issuer == ca.signing.cert.subject
    number = x509.CRLNumber
    assert (
        second.extensions.get_extension_for_class(number).value.crl_number
        > first.extensions.get_extension_for_class(number).value.crl_number
    )


def test_revoking_again_changes_nothing(paths: WorkspacePaths) -> None:
    revoke(paths, "site-a")
    before = paths.crl.read_bytes()
    result = revoke(paths, "site-a")
    assert result.revoked == [] and len(result.already_revoked) == 1
    assert paths.crl.read_bytes() == before


def test_revoke_by_unknown_name_or_serial_is_refused(paths: WorkspacePaths) -> None:
    with pytest.raises(PkiError, match="is named 'site-z' or has that serial"):
        revoke(paths, "site-z")


def test_revoke_refuses_a_ca(paths: WorkspacePaths) -> None:
    ca = load_ca(paths)
    assert ca is not None
    with pytest.raises(PkiError, match="refusing to revoke a CA"):
        revoke(paths, format(ca.signing.cert.serial_number, "X"))


def test_revoke_by_serial_prefix(paths: WorkspacePaths) -> None:
    serial = serial_of(paths.collaborator_cert("site-b"))
    result = revoke(paths, format(serial, "X")[:10])
    assert [info.serial for info in result.revoked] == [serial]


def test_forged_crl_is_refused_when_a_chain_is_given(paths: WorkspacePaths, tmp_path: Path) -> None:
    other = make_workspace(tmp_path / "other")
    certify_workspace(other, aggregator_hosts=["localhost"], collaborators=["site-a"])
    revoke(other, "site-a")
    paths.crl.write_bytes(other.crl.read_bytes())
    with pytest.raises(PkiError, match="not signed by the federation's signing CA"):
        RevocationList(paths.crl, chain=paths.cert_chain).is_revoked(1)


def test_unreadable_crl_fails_closed(paths: WorkspacePaths) -> None:
    paths.crl.write_text("not a CRL")
    with pytest.raises(PkiError, match="not a readable PEM CRL"):
        RevocationList(paths.crl).is_revoked(1)


def test_concurrent_readers_see_the_revocation(paths: WorkspacePaths) -> None:
    revocation_list = RevocationList(paths.crl)
    serial = serial_of(paths.collaborator_cert("site-a"))
    revoke(paths, "site-a")
    seen: list[bool] = []
    lock = threading.Lock()

    def check() -> None:
        for _ in range(50):
            result = revocation_list.is_revoked(serial)
            with lock:
                seen.append(result)

    threads = [threading.Thread(target=check) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [True] * 400


def test_renew_issues_a_new_serial_for_the_same_identity(paths: WorkspacePaths) -> None:
    old = read_certificate(paths.collaborator_cert("site-a"))
    old_key = paths.collaborator_key("site-a").read_bytes()
    result = renew(paths, "site-a", days=90)
    new = read_certificate(paths.collaborator_cert("site-a"))
    assert new.serial_number != old.serial_number == result.old.serial
    assert result.new.identities == ("site-a",)
    assert result.new.key_type == result.old.key_type
    assert paths.collaborator_key("site-a").read_bytes() != old_key
    assert (new.not_valid_after_utc - new.not_valid_before_utc).days in (90, 91)
    # Revoking by name cuts off every certificate of that identity.
    revoked = {info.serial for info in revoke(paths, "site-a").revoked}
    assert revoked == {old.serial_number, new.serial_number}


def test_renew_aggregator_keeps_its_hosts(paths: WorkspacePaths) -> None:
    result = renew(paths, "aggregator")
    assert result.new.identities == ("localhost", "127.0.0.1", "::1")
    assert result.new.role == "aggregator"


@pytest.mark.parametrize("text", ["key-compromise", "keyCompromise", "KEY_COMPROMISE"])
def test_parse_reason(text: str) -> None:
    assert parse_reason(text) is x509.ReasonFlags.key_compromise


def test_parse_reason_rejects_unknown() -> None:
    with pytest.raises(PkiError, match="unknown reason"):
        parse_reason("boredom")
