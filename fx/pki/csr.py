"""Certificate signing requests: made where the key lives, checked where the CA lives.

A CSR carries the name (CN), the role (as the EKU it asks for) and, for an
aggregator, the hosts it serves (SANs). The CA copies none of the CSR's
extensions: it reads the role and SANs, checks them, and issues its own profile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fx.errors import PkiError
from fx.pki.fingerprints import short_fingerprint
from fx.pki.keys import KeyType, PrivateKey, PublicKey, signature_hash
from fx.pki.names import (
    check_collaborator_name,
    check_identity_name,
    common_name,
    host_general_names,
    subject,
)
from fx.pki.pem import Pem
from fx.pki.roles import Role

_ASK_AGAIN = "ask the site for a fresh CSR (`fx pki csr`) and compare its fingerprint"


def create_csr(
    key: PrivateKey, *, name: str, role: Role, hosts: Sequence[str] = ()
) -> x509.CertificateSigningRequest:
    """A CSR for ``key`` asking for a ``role`` certificate named ``name``.

    An aggregator lists the ``hosts`` collaborators dial; a collaborator's only
    SAN is its name.
    """
    if role is Role.COLLABORATOR:
        check_collaborator_name(name, field="--name")
        if hosts:
            raise PkiError(
                "a collaborator is identified by its name only; --san is for the aggregator",
                hint="drop --san, or pass --role aggregator",
            )
        alternative_names: list[x509.GeneralName] = [x509.DNSName(name)]
    else:
        check_identity_name(name, field="--name")
        if not hosts:
            raise PkiError(
                "an aggregator CSR needs the hosts collaborators dial",
                hint="pass --san HOST (repeatable)",
            )
        alternative_names = host_general_names(hosts)
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject(name, organization=None, unit=role.value))
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([role.extended_key_usage]), critical=False)
    )
    return builder.sign(key, signature_hash(key))


def csr_pem(csr: x509.CertificateSigningRequest) -> Pem:
    return Pem(csr.public_bytes(serialization.Encoding.PEM))


def csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def csr_fingerprint(csr: x509.CertificateSigningRequest) -> str:
    """The short SHA-256 fingerprint of the CSR's DER, read aloud to the CA."""
    return short_fingerprint(csr_der(csr))


@dataclass(frozen=True)
class CertificateRequest:
    """A CSR that passed every check: what the CA is asked to certify."""

    csr: x509.CertificateSigningRequest
    name: str
    role: Role
    hosts: tuple[str, ...]
    source: str

    @property
    def public_key(self) -> PublicKey:
        key = self.csr.public_key()
        if not isinstance(key, PublicKey):
            raise AssertionError("read_request admits supported keys only")
        return key

    @property
    def key_type(self) -> KeyType:
        return KeyType.of(self.public_key)

    @property
    def fingerprint(self) -> str:
        return csr_fingerprint(self.csr)

    @property
    def subject(self) -> str:
        return self.csr.subject.rfc4514_string()


def read_request(data: bytes, source: Path | str) -> CertificateRequest:
    """Parse and check the CSR ``data`` read from ``source``.

    PkiError if it is unreadable, its signature does not verify (it was
    altered), it asks for a CA certificate, or its name, role, SANs or key are
    not ones fx issues.
    """
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise PkiError(f"{source}: not a readable PEM CSR ({exc})", hint=_ASK_AGAIN) from exc
    if not csr.is_signature_valid:
        raise PkiError(
            f"{source}: the CSR's signature does not verify: it was altered after it was made",
            hint=_ASK_AGAIN,
        )
    key = csr.public_key()
    if not isinstance(key, PublicKey):
        raise PkiError(f"{source}: unsupported key type {type(key).__name__}", hint=_ASK_AGAIN)
    try:
        KeyType.of(key)
    except PkiError as exc:
        raise PkiError(f"{source}: {exc.message}", hint=exc.hint) from exc
    _refuse_ca_request(csr, source)
    name = common_name(csr.subject)
    if name is None:
        raise PkiError(f"{source}: the CSR has no CN (the name to certify)", hint=_ASK_AGAIN)
    role = _requested_role(csr, source)
    if role is Role.COLLABORATOR:
        check_collaborator_name(name, field=f"{source}: CN")
    else:
        check_identity_name(name, field=f"{source}: CN")
    hosts = _requested_hosts(csr, role, name, source)
    return CertificateRequest(csr=csr, name=name, role=role, hosts=hosts, source=str(source))


def _refuse_ca_request(csr: x509.CertificateSigningRequest, source: Path | str) -> None:
    try:
        constraints = csr.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return
    if constraints.ca:
        raise PkiError(
            f"{source}: the CSR asks for a CA certificate (BasicConstraints ca=True); "
            "fx signs leaf certificates only",
            hint=_ASK_AGAIN,
        )


def _requested_role(csr: x509.CertificateSigningRequest, source: Path | str) -> Role:
    try:
        usages = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    role = Role.from_usages(usages)
    if role is None:
        raise PkiError(
            f"{source}: the CSR must ask for exactly one of serverAuth (aggregator) "
            "or clientAuth (collaborator) in its extended key usage",
            hint="make it with `fx pki csr --role aggregator|collaborator`",
        )
    return role


def _requested_hosts(
    csr: x509.CertificateSigningRequest, role: Role, name: str, source: Path | str
) -> tuple[str, ...]:
    try:
        alternative_names = list(
            csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
    except x509.ExtensionNotFound:
        alternative_names = []
    if role is Role.COLLABORATOR:
        if alternative_names not in ([], [x509.DNSName(name)]):
            raise PkiError(
                f"{source}: a collaborator's only SAN must be its name {name!r}",
                hint=_ASK_AGAIN,
            )
        return ()
    hosts: list[str] = []
    for general_name in alternative_names:
        if not isinstance(general_name, x509.DNSName | x509.IPAddress):
            raise PkiError(
                f"{source}: SAN {general_name} is not a DNS name or IP address",
                hint=_ASK_AGAIN,
            )
        hosts.append(str(general_name.value))
    try:
        host_general_names(hosts)
    except PkiError as exc:
        raise PkiError(f"{source}: {exc.message}", hint=_ASK_AGAIN) from exc
    return tuple(hosts)
