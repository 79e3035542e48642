"""Pem, the value object PEM data travels in, and parsing certificates out of PEM."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fx.errors import PkiError
from fx.pki.files import write_atomically


@dataclass(frozen=True)
class Pem:
    """PEM-encoded data. ``secret`` marks a private key: it is written 0600."""

    data: bytes
    secret: bool = field(default=False, kw_only=True)

    def write_to_path(self, path: Path) -> None:
        """Write atomically; a secret gets mode 0600 from creation on."""
        write_atomically(path, self.data, secret=self.secret)

    def __repr__(self) -> str:
        # Keep private keys out of logs and tracebacks.
        shown = "<secret>" if self.secret else f"{len(self.data)} bytes"
        return f"Pem({shown})"


def certificate_pem(*certificates: x509.Certificate) -> Pem:
    """The certificates concatenated as PEM, in the order given."""
    return Pem(b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certificates))


def load_certificates(data: bytes, source: Path | str) -> list[x509.Certificate]:
    """Every certificate in PEM ``data`` read from ``source``, in file order."""
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PkiError(
            f"{source}: no readable PEM certificate ({exc})",
            hint="check that the file is the certificate fx wrote, not a key or a CSR",
        ) from exc
    return certificates


def load_certificate(data: bytes, source: Path | str) -> x509.Certificate:
    """The first certificate in PEM ``data``."""
    return load_certificates(data, source)[0]


def read_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in the PEM file at ``path``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise PkiError(f"{path}: certificate not found") from exc
    return load_certificates(data, path)


def read_certificate(path: Path) -> x509.Certificate:
    """The first certificate in the PEM file at ``path``."""
    return read_certificates(path)[0]
