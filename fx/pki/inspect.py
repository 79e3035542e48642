"""What a certificate is, in plain fields, and whether it is still good."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from fx.errors import PkiError
from fx.pki.builder import utc_now
from fx.pki.fingerprints import certificate_fingerprint
from fx.pki.identity import identities_of
from fx.pki.keys import KeyType, PublicKey
from fx.pki.names import common_name
from fx.pki.roles import describe_role

EXPIRING_SOON_DAYS = 30


class CertStatus(enum.Enum):
    VALID = "valid"
    EXPIRING_SOON = "expiring soon"
    EXPIRED = "expired"
    REVOKED = "revoked"
    NOT_YET_VALID = "not yet valid"


@dataclass(frozen=True)
class CertificateInfo:
    """The fields `fx pki show` and `fx pki list` print."""

    name: str
    subject: str
    issuer: str
    role: str
    identities: tuple[str, ...]
    serial: int
    not_before: datetime
    not_after: datetime
    fingerprint: str
    key_type: str

    @property
    def serial_hex(self) -> str:
        return format_serial(self.serial)

    def days_left(self, now: datetime | None = None) -> int:
        return (self.not_after - (now or utc_now())).days

    def status(self, *, revoked: bool, now: datetime | None = None) -> CertStatus:
        moment = now or utc_now()
        if revoked:
            return CertStatus.REVOKED
        if moment >= self.not_after:
            return CertStatus.EXPIRED
        if moment < self.not_before:
            return CertStatus.NOT_YET_VALID
        if self.days_left(moment) < EXPIRING_SOON_DAYS:
            return CertStatus.EXPIRING_SOON
        return CertStatus.VALID


def describe_certificate(cert: x509.Certificate) -> CertificateInfo:
    subject = cert.subject.rfc4514_string()
    return CertificateInfo(
        name=common_name(cert.subject) or subject,
        subject=subject,
        issuer=cert.issuer.rfc4514_string(),
        role=describe_role(cert),
        identities=tuple(identities_of(cert)),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=certificate_fingerprint(cert),
        key_type=_describe_key(cert.public_key()),
    )


def _describe_key(key: object) -> str:
    if isinstance(key, PublicKey):
        try:
            return KeyType.of(key).value
        except PkiError:
            pass
    return type(key).__name__


def format_serial(serial: int) -> str:
    """A serial as fx prints it: uppercase hex, no separators."""
    return f"{serial:X}"


def parse_serial(text: str) -> int | None:
    """A serial printed by fx (hex; colons and a 0x prefix allowed), or None."""
    digits = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return int(digits, 16) if digits else None
    except ValueError:
        return None
