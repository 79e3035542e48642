"""The one certificate builder that CA and leaf certificates share.

Everything every fx certificate has is decided here: a random serial, the
validity window, SubjectKeyIdentifier, AuthorityKeyIdentifier and the signature
digest. A caller passes only what its role adds (BasicConstraints, KeyUsage,
EKU, SANs).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from cryptography import x509

from fx.pki.keys import PrivateKey, PublicKey, signature_hash

Extension = tuple[x509.ExtensionType, bool]
"""An extension and whether it is critical."""

CLOCK_SKEW = timedelta(hours=1)
"""Certificates (and CRLs) start this long before they are made, so a peer whose
clock is a little behind does not see them as not yet valid."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def build_certificate(
    *,
    subject: x509.Name,
    public_key: PublicKey,
    issuer: x509.Certificate | None,
    signing_key: PrivateKey,
    not_before: datetime,
    not_after: datetime,
    extensions: Sequence[Extension],
) -> x509.Certificate:
    """A certificate for ``public_key`` signed by ``signing_key``.

    ``issuer`` is the signer's certificate, or None for a self-signed root
    (then ``signing_key`` must be the private half of ``public_key``).
    """
    if not_after <= not_before:
        raise ValueError(f"not_after ({not_after}) must be later than not_before ({not_before})")
    subject_key_id = x509.SubjectKeyIdentifier.from_public_key(public_key)
    if issuer is None:
        authority_key_id = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            subject_key_id
        )
        issuer_name = subject
    else:
        issuer_key_id = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        authority_key_id = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            issuer_key_id.value
        )
        issuer_name = issuer.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(subject_key_id, critical=False)
        .add_extension(authority_key_id, critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, signature_hash(signing_key))
