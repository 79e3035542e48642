"""The leaf certificate profile: what an aggregator or collaborator certificate carries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from fx.errors import PkiError
from fx.pki.builder import CLOCK_SKEW, Extension, utc_now
from fx.pki.keys import PublicKey
from fx.pki.names import host_general_names
from fx.pki.roles import Role

LEAF_DAYS = 365


def leaf_extensions(
    role: Role, *, name: str, hosts: Sequence[str], public_key: PublicKey
) -> list[Extension]:
    """The extensions a leaf of ``role`` adds to the common ones.

    The aggregator's SANs are the hosts collaborators dial; a collaborator's
    only SAN is its name, which is its identity on the wire.
    """
    if role is Role.AGGREGATOR:
        alternative_names = host_general_names(hosts)
    elif hosts:
        raise ValueError("a collaborator is identified by its name only; it takes no hosts")
    else:
        alternative_names = [x509.DNSName(name)]
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_key_usage(public_key), True),
        (x509.ExtendedKeyUsage([role.extended_key_usage]), False),
        (x509.SubjectAlternativeName(alternative_names), False),
    ]


def _key_usage(public_key: PublicKey) -> x509.KeyUsage:
    # RSA key exchange (TLS 1.2 without ECDHE) encrypts to the key; ECDSA keys only sign.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def leaf_validity(
    issuer: x509.Certificate, *, days: int, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """(not_before, not_after) for a leaf valid ``days`` days from ``now``.

    PkiError if the leaf would outlive its issuer: peers would reject it then.
    """
    if days < 1:
        raise PkiError(f"--days {days}: a certificate must be valid at least 1 day")
    start = now or utc_now()
    not_after = start + timedelta(days=days)
    issuer_end = issuer.not_valid_after_utc
    if not_after > issuer_end:
        left = max((issuer_end - start).days, 0)
        raise PkiError(
            f"--days {days}: the certificate would outlive the signing CA "
            f"(valid until {issuer_end:%Y-%m-%d})",
            hint=f"use --days {left} or less",
        )
    return start - CLOCK_SKEW, not_after
