"""The signed bundle: one PEM file, the leaf certificate followed by its chain.

The CA writes it after signing a CSR; the site imports it. Import trusts
nothing in the file by itself: the chain must verify, and the root it ends in
must be the one the site was told (by fingerprint) to expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509 import verification

from fx.errors import PkiError
from fx.pki.builder import utc_now
from fx.pki.fingerprints import certificate_der, certificate_fingerprint, short_fingerprint
from fx.pki.pem import Pem, certificate_pem, load_certificates
from fx.pki.roles import Role, is_ca, role_of


@dataclass(frozen=True)
class Bundle:
    """A leaf certificate, the intermediates above it, and the root they end in."""

    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    root: x509.Certificate

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """The chain of trust without the leaf: what cert_chain.pem holds."""
        return (*self.intermediates, self.root)

    @property
    def pem(self) -> Pem:
        return certificate_pem(self.leaf, *self.chain)

    @property
    def root_fingerprint(self) -> str:
        return certificate_fingerprint(self.root)

    @property
    def root_short_fingerprint(self) -> str:
        return short_fingerprint(certificate_der(self.root))


def read_bundle(data: bytes, source: Path | str) -> Bundle:
    """Split a bundle into leaf, intermediates and root; PkiError if it is not one."""
    certificates = load_certificates(data, source)
    if len(certificates) < 2:
        raise PkiError(
            f"{source}: a bundle holds the certificate and its chain; found "
            f"{len(certificates)} certificate",
            hint="import the .bundle.pem file `fx pki sign` wrote",
        )
    leaf, *intermediates, root = certificates
    if is_ca(leaf):
        raise PkiError(f"{source}: the first certificate is a CA, not a leaf certificate")
    if root.issuer != root.subject or not is_ca(root):
        raise PkiError(
            f"{source}: the last certificate is not a self-signed root CA",
            hint="import the .bundle.pem file `fx pki sign` wrote",
        )
    return Bundle(leaf=leaf, intermediates=tuple(intermediates), root=root)


def verify_bundle(bundle: Bundle, source: Path | str, *, now: datetime | None = None) -> Role:
    """Check the leaf chains up to the bundle's root: signatures, validity, path length
    and the EKU of its role. Returns the role. Whether that root is the *right* root
    is for the caller to check, by fingerprint.
    """
    role = role_of(bundle.leaf)
    if role is None:
        raise PkiError(
            f"{source}: the certificate is neither an aggregator (serverAuth) "
            "nor a collaborator (clientAuth) certificate"
        )
    policy = (
        verification.PolicyBuilder().store(verification.Store([bundle.root])).time(now or utc_now())
    )
    intermediates = list(bundle.intermediates)
    try:
        if role is Role.COLLABORATOR:
            policy.build_client_verifier().verify(bundle.leaf, intermediates)
        else:
            policy.build_server_verifier(_server_subject(bundle.leaf, source)).verify(
                bundle.leaf, intermediates
            )
    except verification.VerificationError as exc:
        raise PkiError(
            f"{source}: the certificate chain does not verify: {exc}",
            hint="ask the CA for a fresh bundle (`fx pki sign`)",
        ) from exc
    return role


def _server_subject(leaf: x509.Certificate, source: Path | str) -> verification.Subject:
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise PkiError(f"{source}: the aggregator certificate has no SAN") from exc
    for general_name in names:
        if isinstance(general_name, x509.DNSName | x509.IPAddress):
            return general_name
    raise PkiError(f"{source}: the aggregator certificate has no DNS name or IP SAN")
