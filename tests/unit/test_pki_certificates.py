"""What the CA and leaf certificates mean: their extensions, names, keys and validity."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fx.errors import PkiError
from fx.pki.builder import utc_now
from fx.pki.ca import CertificateAuthority
from fx.pki.identity import certificate_identities, certificate_serial
from fx.pki.keys import KeyType
from fx.pki.pem import certificate_pem
from fx.pki.roles import Role, describe_role, role_of


@pytest.fixture(scope="module")
def root() -> CertificateAuthority:
    return CertificateAuthority.create_root(organization="demo-federation")


@pytest.fixture(scope="module")
def signing(root: CertificateAuthority) -> CertificateAuthority:
    return root.create_signing_ca()


T = TypeVar("T", bound=x509.ExtensionType)


def extension(cert: x509.Certificate, kind: type[T]) -> x509.Extension[T]:
    return cert.extensions.get_extension_for_class(kind)


def test_root_is_a_ca_that_may_certify_a_chain(root: CertificateAuthority) -> None:
    constraints = extension(root.cert, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length is None
    usage = extension(root.cert, x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert root.cert.issuer == root.cert.subject
    assert describe_role(root.cert) == "root CA"


def test_signing_ca_may_issue_leaves_only(
    root: CertificateAuthority, signing: CertificateAuthority
) -> None:
    constraints = extension(signing.cert, x509.BasicConstraints).value
    assert constraints.ca
    assert constraints.path_length == 0
    signing.cert.verify_directly_issued_by(root.cert)
    authority = extension(signing.cert, x509.AuthorityKeyIdentifier).value
    assert authority.key_identifier == extension(root.cert, x509.SubjectKeyIdentifier).value.digest
    assert describe_role(signing.cert) == "signing CA"


def test_subjects_say_what_they_are(
    root: CertificateAuthority, signing: CertificateAuthority
) -> None:
    def attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> object:
        return name.get_attributes_for_oid(oid)[0].value

    assert attribute(root.cert.subject, NameOID.COMMON_NAME) == "fx Root CA"
    assert attribute(signing.cert.subject, NameOID.COMMON_NAME) == "fx Signing CA"
    assert attribute(signing.cert.subject, NameOID.ORGANIZATION_NAME) == "demo-federation"


def test_ca_lifetimes(root: CertificateAuthority, signing: CertificateAuthority) -> None:
    root_days = (root.cert.not_valid_after_utc - utc_now()).days
    signing_days = (signing.cert.not_valid_after_utc - utc_now()).days
    assert 3640 <= root_days <= 3650
    assert 1820 <= signing_days <= 1825


def test_default_key_is_ecdsa_p384(root: CertificateAuthority) -> None:
    key = root.cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP384R1)
    assert root.key_type is KeyType.ECDSA_P384


def test_aggregator_certificate_is_a_tls_server_for_its_hosts(
    signing: CertificateAuthority,
) -> None:
    key = KeyType.ECDSA_P384.generate()
    cert = signing.issue_cert(
        key.public_key(), "localhost", "agg.example.org", role=Role.AGGREGATOR, name="aggregator"
    )
    assert extension(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    names = extension(cert, x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "agg.example.org"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert role_of(cert) is Role.AGGREGATOR
    constraints = extension(cert, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = extension(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature and not usage.value.key_encipherment
    assert not usage.value.key_cert_sign


def test_collaborator_certificate_names_only_its_identity(signing: CertificateAuthority) -> None:
    key = KeyType.ECDSA_P384.generate()
    cert = signing.issue_cert(key.public_key(), role=Role.COLLABORATOR, name="site-a")
    assert extension(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    pem = certificate_pem(cert).data
    assert certificate_identities(pem) == ["site-a"]
    assert certificate_serial(pem) == cert.serial_number
    assert role_of(cert) is Role.COLLABORATOR
    cert.verify_directly_issued_by(signing.cert)
    authority = extension(cert, x509.AuthorityKeyIdentifier).value
    assert (
        authority.key_identifier == extension(signing.cert, x509.SubjectKeyIdentifier).value.digest
    )
    subject_key = extension(cert, x509.SubjectKeyIdentifier).value
    assert subject_key == x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def test_collaborator_takes_no_hosts(signing: CertificateAuthority) -> None:
    key = KeyType.ECDSA_P384.generate()
    with pytest.raises(ValueError, match="name only"):
        signing.issue_cert(key.public_key(), "evil.example", role=Role.COLLABORATOR, name="x")


def test_rsa_leaf_may_also_encipher_keys(signing: CertificateAuthority) -> None:
    key = KeyType.RSA_3072.generate()
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    cert = signing.issue_cert(key.public_key(), role=Role.COLLABORATOR, name="site-r")
    usage = extension(cert, x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    assert KeyType.of(cert.public_key()) is KeyType.RSA_3072  # type: ignore[arg-type]


def test_leaf_validity_defaults_and_days(signing: CertificateAuthority) -> None:
    key = KeyType.ECDSA_P384.generate()
    default = signing.issue_cert(key.public_key(), role=Role.COLLABORATOR, name="a")
    short = signing.issue_cert(key.public_key(), role=Role.COLLABORATOR, name="a", days=30)
    assert (default.not_valid_after_utc - utc_now()).days in (364, 365)
    assert (short.not_valid_after_utc - utc_now()).days in (29, 30)
    assert default.not_valid_before_utc < utc_now()  # tolerates a peer's clock being behind
    assert default.serial_number != short.serial_number


def test_leaf_may_not_outlive_the_signing_ca(signing: CertificateAuthority) -> None:
    key = KeyType.ECDSA_P384.generate()
    with pytest.raises(PkiError, match="outlive the signing CA") as raised:
        signing.issue_cert(key.public_key(), role=Role.COLLABORATOR, name="a", days=4000)
    assert raised.value.hint is not None and "--days" in raised.value.hint


def test_explicit_validity_window(signing: CertificateAuthority) -> None:
    key = KeyType.ECDSA_P384.generate()
    start = utc_now() - timedelta(days=10)
    cert = signing.issue_cert(
        key.public_key(),
        role=Role.COLLABORATOR,
        name="old",
        not_before=start,
        not_after=start + timedelta(days=1),
    )
    assert cert.not_valid_after_utc < utc_now()


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        (["0.0.0.0"], "where a server listens"),
        (["*.example.org"], "neither an IP address nor a valid DNS name"),
        (["bad host"], "neither an IP address nor a valid DNS name"),
        ([], "at least one host"),
    ],
)
def test_aggregator_hosts_are_checked(
    signing: CertificateAuthority, hosts: list[str], message: str
) -> None:
    key = KeyType.ECDSA_P384.generate()
    with pytest.raises(PkiError, match=message):
        signing.issue_cert(key.public_key(), *hosts, role=Role.AGGREGATOR, name="aggregator")


def test_ip_host_becomes_an_ip_san(signing: CertificateAuthority) -> None:
    key = KeyType.ECDSA_P384.generate()
    cert = signing.issue_cert(
        key.public_key(), "10.0.0.7", "[fd00::1]", role=Role.AGGREGATOR, name="aggregator"
    )
    assert certificate_identities(certificate_pem(cert).data) == ["10.0.0.7", "fd00::1"]


def test_pem_of_a_key_is_secret(root: CertificateAuthority) -> None:
    pem = root.private_key_pem
    assert pem.secret
    assert b"PRIVATE KEY" not in repr(pem).encode()
    assert not root.cert_pem.secret
