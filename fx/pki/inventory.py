"""Every certificate in a workspace, and finding one by name, serial or path."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from fx.errors import PkiError
from fx.pki.fingerprints import certificate_fingerprint
from fx.pki.inspect import CertificateInfo, describe_certificate, format_serial, parse_serial
from fx.pki.names import AGGREGATOR_NAME, common_name, is_identity_name
from fx.pki.pem import read_certificates
from fx.pki.roles import Role, is_ca
from fx.pki.store import CaFiles, issued_certificates
from fx.workspace.paths import WorkspacePaths

MIN_SERIAL_PREFIX = 8


@dataclass(frozen=True)
class FoundCertificate:
    """A certificate and the file it was found in."""

    cert: x509.Certificate
    path: Path

    @property
    def info(self) -> CertificateInfo:
        return describe_certificate(self.cert)

    @property
    def name(self) -> str | None:
        return common_name(self.cert.subject)


def leaf_paths(paths: WorkspacePaths, role: Role, name: str) -> tuple[Path, Path]:
    """(certificate, key) where the workspace keeps the leaf of ``role`` named ``name``."""
    if role is Role.AGGREGATOR:
        return paths.aggregator_cert(), paths.aggregator_key()
    return paths.collaborator_cert(name), paths.collaborator_key(name)


def workspace_certificates(paths: WorkspacePaths) -> list[FoundCertificate]:
    """Each distinct certificate in the workspace: the CAs, then the aggregator's and
    collaborators' files, then any other the CA issued (e.g. from a CSR)."""
    files = CaFiles.of(paths)
    sources: list[Path] = [files.root_cert, files.signing_cert, paths.cert_chain]
    sources += sorted(paths.server_dir.glob("*.crt")) if paths.server_dir.is_dir() else []
    sources += sorted(paths.client_dir.glob("*.crt")) if paths.client_dir.is_dir() else []
    found: list[FoundCertificate] = []
    for path in sources:
        if path.is_file():
            found += [FoundCertificate(cert, path) for cert in read_certificates(path)]
    found += [FoundCertificate(cert, path) for path, cert in issued_certificates(paths)]
    return _distinct(found)


def find_by_name(paths: WorkspacePaths, name: str) -> list[FoundCertificate]:
    """The leaf certificates named ``name`` (their CN), newest first."""
    leaves = [
        found
        for found in workspace_certificates(paths)
        if not is_ca(found.cert) and found.name == name
    ]
    return sorted(leaves, key=lambda found: found.cert.not_valid_before_utc, reverse=True)


def find_by_serial(paths: WorkspacePaths, serial: int) -> list[FoundCertificate]:
    return [found for found in workspace_certificates(paths) if found.cert.serial_number == serial]


def find_certificates(paths: WorkspacePaths, target: str) -> list[FoundCertificate]:
    """The leaves named ``target``, or else the certificate whose serial it is.

    A serial may be shortened to a unique prefix of at least 8 hex digits, as
    `fx pki list` prints it.
    """
    by_name = find_by_name(paths, target)
    if by_name:
        return by_name
    serial = parse_serial(target)
    if serial is not None:
        by_serial = find_by_serial(paths, serial)
        if by_serial:
            return by_serial
        prefix = format_serial(serial)
        if len(prefix) >= MIN_SERIAL_PREFIX:
            by_prefix = [
                found
                for found in workspace_certificates(paths)
                if format_serial(found.cert.serial_number).startswith(prefix)
            ]
            if len(by_prefix) == 1:
                return by_prefix
            if by_prefix:
                raise PkiError(
                    f"serial prefix {target!r} matches {len(by_prefix)} certificates",
                    hint="give more digits of the serial",
                )
    raise PkiError(
        f"no certificate in {paths.cert} is named {target!r} or has that serial",
        hint="see `fx pki list` for names and serials",
    )


def current_certificate(paths: WorkspacePaths, name: str) -> FoundCertificate:
    """The certificate ``name`` uses now: its workspace file, else the newest the CA issued."""
    if is_identity_name(name):
        role = Role.AGGREGATOR if name == AGGREGATOR_NAME else Role.COLLABORATOR
        cert_path, _ = leaf_paths(paths, role, name)
        if cert_path.is_file():
            return FoundCertificate(read_certificates(cert_path)[0], cert_path)
    return find_certificates(paths, name)[0]


def _distinct(found: Iterable[FoundCertificate]) -> list[FoundCertificate]:
    seen: set[str] = set()
    distinct = []
    for item in found:
        fingerprint = certificate_fingerprint(item.cert)
        if fingerprint not in seen:
            seen.add(fingerprint)
            distinct.append(item)
    return distinct
