"""CertificateAuthority: a CA certificate with its key, which issues certificates.

A federation has two: a root CA, whose key signs only the signing CA, and a
signing CA (path length 0) that issues every leaf and the CRL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509

from fx.pki.builder import CLOCK_SKEW, Extension, build_certificate, utc_now
from fx.pki.issue import LEAF_DAYS, leaf_extensions, leaf_validity
from fx.pki.keys import KeyType, PrivateKey, PublicKey, private_key_pem
from fx.pki.names import (
    ROOT_CA_COMMON_NAME,
    SIGNING_CA_COMMON_NAME,
    organization,
    subject,
)
from fx.pki.pem import Pem, certificate_pem
from fx.pki.roles import Role

ROOT_CA_DAYS = 3650
SIGNING_CA_DAYS = 1825


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA: its certificate and the private key that signs with it."""

    cert: x509.Certificate
    key: PrivateKey = field(repr=False)

    @classmethod
    def create_root(
        cls,
        *,
        organization: str,
        key_type: KeyType = KeyType.ECDSA_P384,
        days: int = ROOT_CA_DAYS,
        now: datetime | None = None,
    ) -> CertificateAuthority:
        """A new self-signed root CA for the federation named ``organization``."""
        key = key_type.generate()
        start = now or utc_now()
        cert = build_certificate(
            subject=subject(ROOT_CA_COMMON_NAME, organization=organization),
            public_key=key.public_key(),
            issuer=None,
            signing_key=key,
            not_before=start - CLOCK_SKEW,
            not_after=start + timedelta(days=days),
            extensions=_ca_extensions(path_length=None),
        )
        return cls(cert, key)

    def create_signing_ca(
        self,
        *,
        key_type: KeyType | None = None,
        days: int = SIGNING_CA_DAYS,
        now: datetime | None = None,
    ) -> CertificateAuthority:
        """A CA under this one that may issue leaves only (path length 0).

        ``key_type`` defaults to this CA's own.
        """
        key = (key_type or self.key_type).generate()
        start = now or utc_now()
        cert = build_certificate(
            subject=subject(SIGNING_CA_COMMON_NAME, organization=self.organization),
            public_key=key.public_key(),
            issuer=self.cert,
            signing_key=self.key,
            not_before=start - CLOCK_SKEW,
            not_after=min(start + timedelta(days=days), self.cert.not_valid_after_utc),
            extensions=_ca_extensions(path_length=0),
        )
        return CertificateAuthority(cert, key)

    def issue_cert(
        self,
        public_key: PublicKey,
        *hosts: str,
        role: Role,
        name: str,
        days: int = LEAF_DAYS,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> x509.Certificate:
        """A leaf certificate for ``public_key`` (whose private half stays with its owner).

        ``name`` is the CN; a collaborator's name is also its only SAN. An
        aggregator's SANs are ``hosts``. ``not_before``/``not_after`` override
        ``days`` (tests use them to make expired certificates).
        """
        if not_before is None or not_after is None:
            start, end = leaf_validity(self.cert, days=days)
            not_before, not_after = not_before or start, not_after or end
        return build_certificate(
            subject=subject(name, organization=self.organization, unit=role.value),
            public_key=public_key,
            issuer=self.cert,
            signing_key=self.key,
            not_before=not_before,
            not_after=not_after,
            extensions=leaf_extensions(role, name=name, hosts=hosts, public_key=public_key),
        )

    @property
    def key_type(self) -> KeyType:
        return KeyType.of(self.key)

    @property
    def organization(self) -> str:
        """The federation's name, as this CA's subject carries it."""
        return organization(self.cert.subject) or ""

    @property
    def cert_pem(self) -> Pem:
        return certificate_pem(self.cert)

    @property
    def private_key_pem(self) -> Pem:
        return private_key_pem(self.key)


def _ca_extensions(*, path_length: int | None) -> Sequence[Extension]:
    return [
        (x509.BasicConstraints(ca=True, path_length=path_length), True),
        (
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
    ]
