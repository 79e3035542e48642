"""What a peer's certificate says about who it is: its SAN identities and serial.

Identity is read from the SAN, never from the CN alone: a collaborator's DNS
SAN is its name; an aggregator's SANs are the hosts it serves.
"""

from __future__ import annotations

from cryptography import x509

from fx.pki.pem import load_certificate


def identities_of(cert: x509.Certificate) -> list[str]:
    """The SAN DNS names, then the SAN IP addresses as strings."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    dns_names = names.get_values_for_type(x509.DNSName)
    addresses = [str(address) for address in names.get_values_for_type(x509.IPAddress)]
    return [*dns_names, *addresses]


def certificate_identities(cert_pem: bytes) -> list[str]:
    """The identities of the (first) certificate in ``cert_pem``: SAN DNS names, then IPs."""
    return identities_of(load_certificate(cert_pem, "peer certificate"))


def certificate_serial(cert_pem: bytes) -> int:
    """The serial number of the (first) certificate in ``cert_pem``."""
    return load_certificate(cert_pem, "peer certificate").serial_number
