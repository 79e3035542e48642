"""Revoke and renew certificates the workspace's CA issued."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from fx.errors import PkiError
from fx.pki.builder import utc_now
from fx.pki.bundle import Bundle
from fx.pki.crl import (
    Revocation,
    build_crl,
    check_crl_signature,
    crl_number,
    crl_pem,
    load_crl,
    revocations,
)
from fx.pki.identity import identities_of
from fx.pki.inspect import CertificateInfo, describe_certificate
from fx.pki.inventory import FoundCertificate, current_certificate, find_certificates, leaf_paths
from fx.pki.issue import LEAF_DAYS
from fx.pki.keys import KeyType, PrivateKey, PublicKey, private_key_pem
from fx.pki.pem import certificate_pem
from fx.pki.roles import Role, is_ca, role_of
from fx.pki.store import FederationCa, record_issued, require_ca
from fx.workspace.paths import WorkspacePaths


@dataclass(frozen=True)
class RevokeResult:
    revoked: list[CertificateInfo]
    already_revoked: list[CertificateInfo]


def revoke(
    paths: WorkspacePaths, target: str, *, reason: x509.ReasonFlags | None = None
) -> RevokeResult:
    """Revoke every certificate named ``target`` (or the one whose serial it is).

    cert/crl.pem is re-signed by the signing CA with the new entries; an
    aggregator enforcing it sees the change on its next connection.
    """
    ca = require_ca(paths)
    found = find_certificates(paths, target)
    for item in found:
        _check_issued_by(item, ca)
    entries, number = _current_entries(paths, ca)
    listed = {entry.serial for entry in entries}
    now = utc_now()
    fresh = [item for item in found if item.cert.serial_number not in listed]
    if fresh:
        entries += [Revocation(item.cert.serial_number, now, reason) for item in fresh]
        crl_pem(build_crl(ca.signing, entries, number=number + 1, now=now)).write_to_path(paths.crl)
    return RevokeResult(
        revoked=[item.info for item in fresh],
        already_revoked=[item.info for item in found if item.cert.serial_number in listed],
    )


def _check_issued_by(item: FoundCertificate, ca: FederationCa) -> None:
    if is_ca(item.cert):
        raise PkiError(
            f"{item.path}: refusing to revoke a CA certificate",
            hint="revoke the leaf certificates by name; a compromised CA means a new PKI",
        )
    try:
        item.cert.verify_directly_issued_by(ca.signing.cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PkiError(
            f"{item.path}: not issued by this workspace's signing CA",
            hint="revoke it on the workspace of the CA that issued it",
        ) from exc


def _current_entries(paths: WorkspacePaths, ca: FederationCa) -> tuple[list[Revocation], int]:
    if not paths.crl.exists():
        return [], 0
    crl = load_crl(paths.crl.read_bytes(), paths.crl)
    check_crl_signature(crl, [ca.signing.cert], paths.crl)
    return revocations(crl), crl_number(crl)


@dataclass(frozen=True)
class RenewResult:
    """The old and new certificate, and where the new one went."""

    old: CertificateInfo
    new: CertificateInfo
    cert_path: Path | None
    """Where the new certificate was installed, when its key is in this workspace."""
    key_path: Path | None
    """The new key (same type as the old one), when it is in this workspace."""
    bundle_path: Path | None
    """The bundle for the key's owner to import, when the key is held elsewhere."""


def renew(
    paths: WorkspacePaths,
    name: str,
    *,
    days: int = LEAF_DAYS,
    bundle_path: Path | None = None,
) -> RenewResult:
    """A fresh certificate (new serial, new validity) for ``name``'s identity and key type.

    When the key is in this workspace, it is replaced by a new key of the same
    type. When it is held elsewhere (signed from a CSR), the same public key is
    certified again and a bundle is written for its owner to ``fx pki import``.
    The old certificate stays valid until it expires or is revoked.
    """
    ca = require_ca(paths)
    current = current_certificate(paths, name)
    role = role_of(current.cert)
    if role is None:
        raise PkiError(f"{current.path}: not an aggregator or collaborator certificate")
    old_key = current.cert.public_key()
    if not isinstance(old_key, PublicKey):
        raise PkiError(f"{current.path}: unsupported key type {type(old_key).__name__}")
    hosts = identities_of(current.cert) if role is Role.AGGREGATOR else []
    cert_path, key_path = leaf_paths(paths, role, name)
    if key_path.exists():
        key: PrivateKey = KeyType.of(old_key).generate()
        cert = ca.signing.issue_cert(key.public_key(), *hosts, role=role, name=name, days=days)
        private_key_pem(key).write_to_path(key_path)
        certificate_pem(cert).write_to_path(cert_path)
        record_issued(paths, cert)
        return RenewResult(current.info, describe_certificate(cert), cert_path, key_path, None)
    cert = ca.signing.issue_cert(old_key, *hosts, role=role, name=name, days=days)
    record_issued(paths, cert)
    out = bundle_path or paths.root / f"{name}.bundle.pem"
    Bundle(leaf=cert, intermediates=(ca.signing.cert,), root=ca.root.cert).pem.write_to_path(out)
    return RenewResult(current.info, describe_certificate(cert), None, None, out)
