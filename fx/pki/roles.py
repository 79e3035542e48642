"""Role: what a leaf certificate is for, carried in its extended key usage."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier


class Role(enum.Enum):
    """The two kinds of leaf certificate. The value is what the CLI accepts."""

    AGGREGATOR = "aggregator"
    COLLABORATOR = "collaborator"

    @property
    def extended_key_usage(self) -> ObjectIdentifier:
        """The aggregator is a TLS server; a collaborator is a TLS client."""
        if self is Role.AGGREGATOR:
            return ExtendedKeyUsageOID.SERVER_AUTH
        return ExtendedKeyUsageOID.CLIENT_AUTH

    @classmethod
    def from_usages(cls, usages: Iterable[ObjectIdentifier]) -> Role | None:
        """The role whose EKU is among ``usages``; None for none or both."""
        roles = {role for role in cls if role.extended_key_usage in set(usages)}
        return roles.pop() if len(roles) == 1 else None


def role_of(cert: x509.Certificate) -> Role | None:
    """The role of a leaf certificate, from its EKU; None for a CA or a foreign cert."""
    if is_ca(cert):
        return None
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    return Role.from_usages(usage)


def is_ca(cert: x509.Certificate) -> bool:
    """Whether ``cert`` is a CA certificate (BasicConstraints ca=True)."""
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def describe_role(cert: x509.Certificate) -> str:
    """What ``cert`` is, in words: root CA, signing CA, aggregator, collaborator, unknown."""
    if is_ca(cert):
        return "root CA" if cert.issuer == cert.subject else "signing CA"
    role = role_of(cert)
    return role.value if role is not None else "unknown"
