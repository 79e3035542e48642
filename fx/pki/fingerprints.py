"""SHA-256 fingerprints: the full one for records, a short one to read aloud.

The short form is the first 16 hex digits (64 bits) in groups of four, e.g.
``3F2A-9C01-77DE-0B4E``. Either form is accepted wherever a fingerprint is
checked; separators and case do not matter.
"""

from __future__ import annotations

import hashlib
import string

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fx.errors import PkiError

SHORT_HEX_DIGITS = 16
_SEPARATORS = str.maketrans("", "", ":- \t")


def full_fingerprint(der: bytes) -> str:
    """SHA-256 of ``der`` as colon-separated uppercase hex (the openssl style)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def short_fingerprint(der: bytes) -> str:
    """The first 16 hex digits of SHA-256 of ``der``, in groups of four."""
    digest = hashlib.sha256(der).hexdigest()[:SHORT_HEX_DIGITS].upper()
    return "-".join(digest[i : i + 4] for i in range(0, SHORT_HEX_DIGITS, 4))


def certificate_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """The full SHA-256 fingerprint of a certificate."""
    return full_fingerprint(certificate_der(cert))


def normalize_fingerprint(text: str, *, field: str) -> str:
    """``text`` as lowercase hex without separators; PkiError if it is not a fingerprint."""
    digits = text.translate(_SEPARATORS).lower()
    if len(digits) < SHORT_HEX_DIGITS or not set(digits) <= set(string.hexdigits.lower()):
        raise PkiError(
            f"{field}: {text!r} is not a SHA-256 fingerprint",
            hint=f"give at least its first {SHORT_HEX_DIGITS} hex digits, e.g. 3F2A-9C01-77DE-0B4E",
        )
    return digits


def fingerprint_matches(expected: str, der: bytes, *, field: str) -> bool:
    """Whether ``expected`` (full or short form) is the fingerprint of ``der``."""
    digits = normalize_fingerprint(expected, field=field)
    return hashlib.sha256(der).hexdigest().startswith(digits)
