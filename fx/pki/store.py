"""Where the CA keeps its files: cert/ca/ holds both CA keys and certificates, and
cert/ca/issued/ a copy of every leaf the signing CA issued (by serial), so the CA
can list, renew and revoke certificates whose keys live elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from fx.errors import PkiError
from fx.pki.ca import CertificateAuthority
from fx.pki.files import make_private_dir
from fx.pki.inspect import format_serial
from fx.pki.keys import key_matches, read_private_key
from fx.pki.pem import Pem, certificate_pem, read_certificate
from fx.workspace.paths import WorkspacePaths


@dataclass(frozen=True)
class CaFiles:
    """The file names inside cert/ca/."""

    directory: Path

    @classmethod
    def of(cls, paths: WorkspacePaths) -> CaFiles:
        return cls(paths.ca_dir)

    @property
    def root_cert(self) -> Path:
        return self.directory / "root_ca.crt"

    @property
    def root_key(self) -> Path:
        return self.directory / "root_ca.key"

    @property
    def signing_cert(self) -> Path:
        return self.directory / "signing_ca.crt"

    @property
    def signing_key(self) -> Path:
        return self.directory / "signing_ca.key"

    @property
    def issued_dir(self) -> Path:
        return self.directory / "issued"

    def issued_cert(self, serial: int) -> Path:
        return self.issued_dir / f"{format_serial(serial)}.crt"

    def all(self) -> tuple[Path, ...]:
        return (self.root_cert, self.root_key, self.signing_cert, self.signing_key)


@dataclass(frozen=True)
class FederationCa:
    """The federation's two CAs: the root, and the signing CA it certified."""

    root: CertificateAuthority
    signing: CertificateAuthority

    @property
    def chain_pem(self) -> Pem:
        """cert_chain.pem: the signing CA then the root, what every peer trusts."""
        return certificate_pem(self.signing.cert, self.root.cert)


def load_ca(paths: WorkspacePaths) -> FederationCa | None:
    """The workspace's CA, None if it has none; PkiError if it has part of one."""
    files = CaFiles.of(paths)
    present = [path for path in files.all() if path.exists()]
    if not present:
        return None
    missing = [path for path in files.all() if not path.exists()]
    if missing:
        raise PkiError(
            f"incomplete CA in {files.directory}: {', '.join(str(p) for p in missing)} missing",
            hint="restore cert/ca/ from its backup; a new CA means re-issuing every certificate",
        )
    root = _load_authority(files.root_cert, files.root_key)
    signing = _load_authority(files.signing_cert, files.signing_key)
    try:
        signing.cert.verify_directly_issued_by(root.cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PkiError(
            f"{files.signing_cert} was not issued by {files.root_cert}",
            hint="restore cert/ca/ from its backup",
        ) from exc
    return FederationCa(root=root, signing=signing)


def require_ca(paths: WorkspacePaths) -> FederationCa:
    """The workspace's CA, or PkiError saying how to get one."""
    ca = load_ca(paths)
    if ca is None:
        raise no_ca_error(paths)
    return ca


def no_ca_error(paths: WorkspacePaths) -> PkiError:
    """Why this workspace has no CA, and what to do instead."""
    if paths.cert_chain.exists():
        return PkiError(
            f"{CaFiles.of(paths).directory} holds no CA: this workspace trusts a CA kept "
            "elsewhere (cert/cert_chain.pem)",
            hint="run this on the CA's workspace; here, use `fx pki csr` and import the bundle",
        )
    return PkiError(
        f"{CaFiles.of(paths).directory} holds no CA",
        hint="run `fx pki init` (or `fx pki certify`) first",
    )


def save_ca(paths: WorkspacePaths, ca: FederationCa) -> list[Path]:
    """Write both CAs' keys (0600, in a 0700 directory) and certificates."""
    files = CaFiles.of(paths)
    make_private_dir(files.directory)
    ca.root.private_key_pem.write_to_path(files.root_key)
    ca.root.cert_pem.write_to_path(files.root_cert)
    ca.signing.private_key_pem.write_to_path(files.signing_key)
    ca.signing.cert_pem.write_to_path(files.signing_cert)
    return [files.root_cert, files.root_key, files.signing_cert, files.signing_key]


def record_issued(paths: WorkspacePaths, cert: x509.Certificate) -> Path:
    """Keep a copy of a leaf the signing CA issued; returns where."""
    path = CaFiles.of(paths).issued_cert(cert.serial_number)
    certificate_pem(cert).write_to_path(path)
    return path


def issued_certificates(paths: WorkspacePaths) -> list[tuple[Path, x509.Certificate]]:
    """Every leaf the CA recorded, oldest first."""
    directory = CaFiles.of(paths).issued_dir
    if not directory.is_dir():
        return []
    found = [(path, read_certificate(path)) for path in sorted(directory.glob("*.crt"))]
    return sorted(found, key=lambda item: item[1].not_valid_before_utc)


def _load_authority(cert_path: Path, key_path: Path) -> CertificateAuthority:
    cert = read_certificate(cert_path)
    key = read_private_key(key_path)
    if not key_matches(key, cert.public_key()):
        raise PkiError(
            f"{key_path} is not the key of {cert_path}",
            hint="restore cert/ca/ from its backup",
        )
    return CertificateAuthority(cert, key)
