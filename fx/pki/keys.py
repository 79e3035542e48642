"""Key types, key generation, and (de)serializing private keys."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TypeAlias

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from fx.errors import PkiError
from fx.pki.pem import Pem

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_RSA_BITS = 3072


class KeyType(enum.Enum):
    """The key algorithms fx issues. The value is what the CLI accepts."""

    ECDSA_P384 = "ecdsa-p384"
    RSA_3072 = "rsa-3072"

    def generate(self) -> PrivateKey:
        """A fresh private key of this type."""
        if self is KeyType.ECDSA_P384:
            return ec.generate_private_key(ec.SECP384R1())
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)

    @classmethod
    def of(cls, key: PrivateKey | PublicKey) -> KeyType:
        """The type of an existing key, or PkiError for one fx does not issue."""
        if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
            if isinstance(key.curve, ec.SECP384R1):
                return cls.ECDSA_P384
            detail = f"ECDSA on {key.curve.name}"
        elif key.key_size == _RSA_BITS:
            return cls.RSA_3072
        else:
            detail = f"RSA-{key.key_size}"
        raise PkiError(
            f"unsupported key: {detail}",
            hint=f"use one of: {', '.join(t.value for t in cls)}",
        )


def signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    """The digest a key signs with: SHA-384 for P-384 (matching strength), SHA-256 for RSA."""
    return hashes.SHA384() if isinstance(key, ec.EllipticCurvePrivateKey) else hashes.SHA256()


def private_key_pem(key: PrivateKey) -> Pem:
    """The key as unencrypted PKCS#8 PEM, marked secret so it is written 0600."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Pem(data, secret=True)


def load_private_key(data: bytes, source: Path | str) -> PrivateKey:
    """Parse a PEM private key read from ``source`` (named in the error)."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(
            f"{source}: not a readable unencrypted PEM private key ({exc})",
            hint="restore the key, or issue a new one with `fx pki renew`",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"{source}: unsupported key type {type(key).__name__}")
    KeyType.of(key)
    return key


def read_private_key(path: Path) -> PrivateKey:
    """Load the private key at ``path``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise PkiError(f"{path}: private key not found") from exc
    return load_private_key(data, path)


def key_matches(key: PrivateKey, public_key: CertificatePublicKeyTypes) -> bool:
    """Whether ``public_key`` (e.g. a certificate's) is the public half of ``key``."""
    return _subject_public_key_info(key.public_key()) == _subject_public_key_info(public_key)


def _subject_public_key_info(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
