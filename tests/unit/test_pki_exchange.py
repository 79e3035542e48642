"""The multi-party flow as a library: CSR checks, signing, bundle verification, import."""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fx.errors import PkiError
from fx.pki.builder import utc_now
from fx.pki.bundle import Bundle, read_bundle, verify_bundle
from fx.pki.csr import create_csr, csr_pem, read_request
from fx.pki.exchange import (
    check_request_fingerprint,
    create_request,
    import_bundle,
    sign_request,
)
from fx.pki.fingerprints import short_fingerprint
from fx.pki.keys import KeyType, signature_hash
from fx.pki.names import subject
from fx.pki.pem import read_certificate
from fx.pki.roles import Role
from fx.pki.store import load_ca
from fx.pki.workspace import certify_workspace, require_collaborator_credentials
from fx.workspace.paths import WorkspacePaths


def make_workspace(root: Path) -> WorkspacePaths:
    (root / "plan").mkdir(parents=True)
    (root / "plan" / "plan.yaml").write_text("# stub: the PKI does not read the plan\n")
    return WorkspacePaths(root)


@pytest.fixture
def ca_paths(tmp_path: Path) -> WorkspacePaths:
    paths = make_workspace(tmp_path / "ca")
    certify_workspace(paths, aggregator_hosts=["localhost"], collaborators=[])
    return paths


@pytest.fixture
def site_paths(tmp_path: Path) -> WorkspacePaths:
    return make_workspace(tmp_path / "site")


def test_request_writes_a_private_key_and_a_csr(site_paths: WorkspacePaths) -> None:
    result = create_request(site_paths, name="site-a", role=Role.COLLABORATOR)
    assert result.key_created
    assert result.key_path == site_paths.collaborator_key("site-a")
    assert stat.S_IMODE(result.key_path.stat().st_mode) == 0o600
    assert result.csr_path == site_paths.client_dir / "site-a.csr"
    request = read_request(result.csr_path.read_bytes(), result.csr_path)
    assert (request.name, request.role, request.hosts) == ("site-a", Role.COLLABORATOR, ())
    assert request.fingerprint == result.request.fingerprint
    assert len(request.fingerprint) == 19  # 16 hex digits in groups of four
    # Asking again reuses the key: it may already back a certificate.
    again = create_request(site_paths, name="site-a", role=Role.COLLABORATOR)
    assert not again.key_created
    assert again.request.public_key == result.request.public_key


def test_aggregator_request_carries_its_hosts(site_paths: WorkspacePaths) -> None:
    result = create_request(
        site_paths, name="aggregator", role=Role.AGGREGATOR, hosts=["agg.example.org", "10.1.2.3"]
    )
    assert result.key_path == site_paths.aggregator_key()
    assert result.request.hosts == ("agg.example.org", "10.1.2.3")


def test_collaborator_request_takes_no_san(site_paths: WorkspacePaths) -> None:
    with pytest.raises(PkiError, match="identified by its name only"):
        create_request(site_paths, name="site-a", role=Role.COLLABORATOR, hosts=["x.example"])
    assert not site_paths.collaborator_key("site-a").exists()


def test_tampered_csr_is_refused() -> None:
    key = KeyType.ECDSA_P384.generate()
    der = create_csr(key, name="site-a", role=Role.COLLABORATOR).public_bytes(
        serialization.Encoding.DER
    )
    tampered = x509.load_der_x509_csr(der.replace(b"site-a", b"site-b"))
    with pytest.raises(PkiError, match="signature does not verify"):
        read_request(csr_pem(tampered).data, "site-a.csr")


def test_csr_asking_for_a_ca_is_refused() -> None:
    key = KeyType.ECDSA_P384.generate()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject("site-a", organization=None))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([Role.COLLABORATOR.extended_key_usage]), critical=False
        )
        .sign(key, signature_hash(key))
    )
    with pytest.raises(PkiError, match="asks for a CA certificate"):
        read_request(csr_pem(csr).data, "evil.csr")


@pytest.mark.parametrize("name", ["Site A", "../../etc/passwd", "aggregator", "-x"])
def test_csr_with_an_unsafe_name_is_refused(name: str) -> None:
    key = KeyType.ECDSA_P384.generate()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject(name, organization=None))
        .add_extension(
            x509.ExtendedKeyUsage([Role.COLLABORATOR.extended_key_usage]), critical=False
        )
        .sign(key, signature_hash(key))
    )
    with pytest.raises(PkiError, match=r"not a safe identity name|reserved"):
        read_request(csr_pem(csr).data, "odd.csr")


def test_collaborator_csr_smuggling_another_identity_is_refused() -> None:
    key = KeyType.ECDSA_P384.generate()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject("site-a", organization=None))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("site-a"), x509.DNSName("site-b")]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([Role.COLLABORATOR.extended_key_usage]), critical=False
        )
        .sign(key, signature_hash(key))
    )
    with pytest.raises(PkiError, match="only SAN must be its name"):
        read_request(csr_pem(csr).data, "site-a.csr")


def test_csr_without_a_role_is_refused() -> None:
    key = KeyType.ECDSA_P384.generate()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject("site-a", organization=None))
        .sign(key, signature_hash(key))
    )
    with pytest.raises(PkiError, match=r"serverAuth .* clientAuth"):
        read_request(csr_pem(csr).data, "site-a.csr")


def test_fingerprint_check(site_paths: WorkspacePaths) -> None:
    request = create_request(site_paths, name="site-a", role=Role.COLLABORATOR).request
    check_request_fingerprint(request, request.fingerprint)
    check_request_fingerprint(request, request.fingerprint.lower().replace("-", " "))
    with pytest.raises(PkiError, match="not the CSR the site made"):
        check_request_fingerprint(request, "0000-0000-0000-0000")
    with pytest.raises(PkiError, match="not a SHA-256 fingerprint"):
        check_request_fingerprint(request, "12ab")


def test_sign_and_import(
    ca_paths: WorkspacePaths, site_paths: WorkspacePaths, tmp_path: Path
) -> None:
    request = create_request(site_paths, name="site-a", role=Role.COLLABORATOR).request
    signed = sign_request(ca_paths, request, out=tmp_path / "site-a.bundle.pem")
    bundle = read_bundle(signed.bundle_path.read_bytes(), signed.bundle_path)
    assert verify_bundle(bundle, signed.bundle_path) is Role.COLLABORATOR
    assert signed.info.name == "site-a"

    imported = import_bundle(
        site_paths, signed.bundle_path, root_fingerprint=signed.root_short_fingerprint
    )
    assert imported.cert_path == site_paths.collaborator_cert("site-a")
    assert imported.root_checked_against == "--root-fingerprint"
    assert site_paths.cert_chain.read_bytes() == ca_paths.cert_chain.read_bytes()
    require_collaborator_credentials(site_paths, "site-a")
    # The CA keeps a record of what it issued, for list / revoke / renew.
    ca = load_ca(ca_paths)
    assert ca is not None
    from fx.pki.store import CaFiles

    record = CaFiles.of(ca_paths).issued_cert(signed.info.serial)
    assert read_certificate(record).serial_number == signed.info.serial


def test_import_checks_against_the_workspace_chain(
    ca_paths: WorkspacePaths, site_paths: WorkspacePaths, tmp_path: Path
) -> None:
    site_paths.cert.mkdir()
    site_paths.cert_chain.write_bytes(ca_paths.cert_chain.read_bytes())  # came with the workspace
    request = create_request(site_paths, name="site-a", role=Role.COLLABORATOR).request
    signed = sign_request(ca_paths, request, out=tmp_path / "b.pem")
    result = import_bundle(site_paths, signed.bundle_path)
    assert result.root_checked_against == str(site_paths.cert_chain)


def test_bundle_from_a_foreign_root_is_refused(
    ca_paths: WorkspacePaths, site_paths: WorkspacePaths, tmp_path: Path
) -> None:
    rogue = make_workspace(tmp_path / "rogue")
    certify_workspace(rogue, aggregator_hosts=["localhost"], collaborators=[])
    request = create_request(site_paths, name="site-a", role=Role.COLLABORATOR).request
    signed = sign_request(rogue, request, out=tmp_path / "rogue.bundle.pem")
    expected = sign_request(ca_paths, request, out=tmp_path / "good.bundle.pem")

    with pytest.raises(PkiError, match="root CA has fingerprint"):
        import_bundle(
            site_paths, signed.bundle_path, root_fingerprint=expected.root_short_fingerprint
        )
    site_paths.cert_chain.write_bytes(ca_paths.cert_chain.read_bytes())
    with pytest.raises(PkiError, match="is not the one"):
        import_bundle(site_paths, signed.bundle_path)
    assert not site_paths.collaborator_cert("site-a").exists()


def test_bundle_for_another_key_is_refused(
    ca_paths: WorkspacePaths, site_paths: WorkspacePaths, tmp_path: Path
) -> None:
    create_request(site_paths, name="site-a", role=Role.COLLABORATOR)
    certify_workspace(ca_paths, aggregator_hosts=["localhost"], collaborators=["site-a"])
    ca = load_ca(ca_paths)
    assert ca is not None
    leaf = read_certificate(ca_paths.collaborator_cert("site-a"))  # the CA's own site-a key
    path = tmp_path / "other-key.bundle.pem"
    Bundle(leaf=leaf, intermediates=(ca.signing.cert,), root=ca.root.cert).pem.write_to_path(path)
    with pytest.raises(PkiError, match="not for the key in"):
        import_bundle(
            site_paths,
            path,
            root_fingerprint=short_fingerprint(
                ca.root.cert.public_bytes(serialization.Encoding.DER)
            ),
        )


def test_expired_or_broken_chain_is_refused(ca_paths: WorkspacePaths, tmp_path: Path) -> None:
    ca = load_ca(ca_paths)
    assert ca is not None
    key = KeyType.ECDSA_P384.generate()
    start = utc_now() - timedelta(days=10)
    expired = ca.signing.issue_cert(
        key.public_key(),
        role=Role.COLLABORATOR,
        name="site-a",
        not_before=start,
        not_after=start + timedelta(days=1),
    )
    bundle = Bundle(leaf=expired, intermediates=(ca.signing.cert,), root=ca.root.cert)
    with pytest.raises(PkiError, match="does not verify"):
        verify_bundle(bundle, "expired.pem")

    fresh = ca.signing.issue_cert(key.public_key(), role=Role.COLLABORATOR, name="site-a")
    skipped = Bundle(leaf=fresh, intermediates=(), root=ca.root.cert)  # signing CA left out
    with pytest.raises(PkiError, match="does not verify"):
        verify_bundle(skipped, "short.pem")


def test_leaf_signed_past_a_path_length_zero_ca_is_refused(ca_paths: WorkspacePaths) -> None:
    """The signing CA may not certify another CA: a chain through one does not verify."""
    from fx.pki.builder import build_certificate
    from fx.pki.ca import _ca_extensions

    ca = load_ca(ca_paths)
    assert ca is not None
    sub_key = KeyType.ECDSA_P384.generate()
    now = utc_now()
    sub_cert = build_certificate(
        subject=subject("rogue sub CA", organization="x"),
        public_key=sub_key.public_key(),
        issuer=ca.signing.cert,
        signing_key=ca.signing.key,
        not_before=now - timedelta(hours=1),
        not_after=now + timedelta(days=30),
        extensions=_ca_extensions(path_length=None),
    )
    from fx.pki.ca import CertificateAuthority

    sub = CertificateAuthority(sub_cert, sub_key)
    leaf = sub.issue_cert(
        KeyType.ECDSA_P384.generate().public_key(), role=Role.COLLABORATOR, name="site-z", days=10
    )
    bundle = Bundle(leaf=leaf, intermediates=(sub_cert, ca.signing.cert), root=ca.root.cert)
    with pytest.raises(PkiError, match="does not verify"):
        verify_bundle(bundle, "deep.pem")
