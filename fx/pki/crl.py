"""The certificate revocation list: the signing CA writes it, the aggregator enforces it.

``fx pki revoke`` re-signs cert/crl.pem with one more entry; a running
aggregator's :class:`RevocationList` notices the new file on its next check,
so revoking needs no restart.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fx.errors import PkiError
from fx.pki.builder import CLOCK_SKEW, utc_now
from fx.pki.ca import CertificateAuthority
from fx.pki.keys import PublicKey, signature_hash
from fx.pki.pem import Pem, read_certificates

CRL_DAYS = 365
"""How far ahead a CRL's nextUpdate lies. fx re-signs the CRL on every revoke;
the aggregator reads whatever file is there and does not expire it."""


@dataclass(frozen=True)
class Revocation:
    """One revoked certificate."""

    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags | None = None


def build_crl(
    signer: CertificateAuthority,
    revocations: Iterable[Revocation],
    *,
    number: int,
    now: datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL signed by ``signer`` listing ``revocations``; ``number`` orders successive CRLs."""
    start = now or utc_now()
    signer_key_id = signer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(signer.cert.subject)
        .last_update(start - CLOCK_SKEW)
        .next_update(start + timedelta(days=CRL_DAYS))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(signer_key_id.value),
            critical=False,
        )
    )
    for revocation in revocations:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(revocation.serial)
            .revocation_date(revocation.revoked_at)
        )
        if revocation.reason is not None:
            entry = entry.add_extension(x509.CRLReason(revocation.reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(signer.key, signature_hash(signer.key))


def crl_pem(crl: x509.CertificateRevocationList) -> Pem:
    return Pem(crl.public_bytes(serialization.Encoding.PEM))


def load_crl(data: bytes, source: Path | str) -> x509.CertificateRevocationList:
    try:
        return x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise PkiError(
            f"{source}: not a readable PEM CRL ({exc})",
            hint="restore it, or re-create it with `fx pki revoke` on the CA's workspace",
        ) from exc


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def revocations(crl: x509.CertificateRevocationList) -> list[Revocation]:
    """The entries of ``crl``, with their reasons."""
    entries = []
    for revoked in crl:
        try:
            reason: x509.ReasonFlags | None = revoked.extensions.get_extension_for_class(
                x509.CRLReason
            ).value.reason
        except x509.ExtensionNotFound:
            reason = None
        entries.append(Revocation(revoked.serial_number, revoked.revocation_date_utc, reason))
    return entries


def check_crl_signature(
    crl: x509.CertificateRevocationList, issuers: Iterable[x509.Certificate], source: Path | str
) -> None:
    """PkiError unless ``crl`` is signed by one of ``issuers``."""
    for issuer in issuers:
        if issuer.subject != crl.issuer:
            continue
        public_key = issuer.public_key()
        if isinstance(public_key, PublicKey) and crl.is_signature_valid(public_key):
            return
    raise PkiError(
        f"{source}: the CRL is not signed by the federation's signing CA",
        hint="restore it from the CA's workspace (cert/crl.pem)",
    )


def parse_reason(text: str) -> x509.ReasonFlags:
    """A CRL reason from its name, e.g. ``key-compromise`` or ``keyCompromise``."""
    wanted = text.replace("-", "").replace("_", "").lower()
    for reason in x509.ReasonFlags:
        if reason is not x509.ReasonFlags.remove_from_crl and reason.value.lower() == wanted:
            return reason
    names = ", ".join(
        reason.name.replace("_", "-")
        for reason in x509.ReasonFlags
        if reason is not x509.ReasonFlags.remove_from_crl
    )
    raise PkiError(f"--reason: unknown reason {text!r}", hint=f"use one of: {names}")


class RevocationList:
    """The revoked serials in the CRL at ``path``, kept current as the file changes.

    Each query stats the file and re-reads it when its inode, size or mtime
    changed, so a ``fx pki revoke`` takes effect on the next connection. A
    missing file means nothing is revoked; an unreadable one (or, when
    ``chain`` is given, one not signed by a CA in that PEM file) raises
    PkiError: a caller enforcing revocation should then refuse the peer.
    Safe to share between threads.
    """

    def __init__(self, path: Path, *, chain: Path | None = None) -> None:
        self._path = path
        self._issuers = read_certificates(chain) if chain is not None else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._serials: frozenset[int] = frozenset()

    @property
    def path(self) -> Path:
        return self._path

    def is_revoked(self, serial: int) -> bool:
        """Whether the certificate with ``serial`` is revoked."""
        return serial in self.revoked_serials()

    def revoked_serials(self) -> frozenset[int]:
        """Every revoked serial, as of the file on disk now."""
        with self._lock:
            try:
                status = os.stat(self._path)
            except FileNotFoundError:
                self._stamp, self._serials = None, frozenset()
                return self._serials
            except OSError as exc:
                raise _unreadable(self._path, exc) from exc
            stamp = (status.st_ino, status.st_size, status.st_mtime_ns)
            if stamp != self._stamp:
                self._serials = self._read()
                self._stamp = stamp
            return self._serials

    def _read(self) -> frozenset[int]:
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return frozenset()
        except OSError as exc:
            raise _unreadable(self._path, exc) from exc
        crl = load_crl(data, self._path)
        if self._issuers is not None:
            check_crl_signature(crl, self._issuers, self._path)
        return frozenset(revoked.serial_number for revoked in crl)


def _unreadable(path: Path, exc: OSError) -> PkiError:
    return PkiError(
        f"{path}: cannot read the CRL ({exc.strerror or exc})",
        hint="make it readable by the aggregator, or restore it from the CA's workspace",
    )
