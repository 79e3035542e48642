"""Names in certificates: identity names, X.509 subjects, and the aggregator's host SANs."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from cryptography import x509
from cryptography.x509.oid import NameOID

from fx.errors import PkiError

# The same rule as plan/cols.yaml (workspace_schema/cols.schema.json): a DNS label,
# so a collaborator name is also a valid DNS SAN and a safe file name.
_IDENTITY = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_IDENTITY_RULE = "1-63 lowercase letters, digits and '-', not starting or ending with '-'"

AGGREGATOR_NAME = "aggregator"
"""The name of the aggregator's certificate (its CN); collaborators may not use it."""

ROOT_CA_COMMON_NAME = "fx Root CA"
SIGNING_CA_COMMON_NAME = "fx Signing CA"

_MAX_ORGANIZATION = 64  # the X.520 upper bound for organizationName
DEFAULT_ORGANIZATION = "fx federation"

_LOOPBACK: tuple[x509.GeneralName, ...] = (
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
)


def is_identity_name(name: str) -> bool:
    """Whether ``name`` is a safe identity name (a DNS label, as in cols.yaml)."""
    return _IDENTITY.fullmatch(name) is not None


def check_identity_name(name: str, *, field: str = "name") -> str:
    """``name`` if it is a safe identity name, else PkiError naming ``field``."""
    if not is_identity_name(name):
        raise PkiError(
            f"{field}: {name!r} is not a safe identity name", hint=f"use {_IDENTITY_RULE}"
        )
    return name


def check_collaborator_name(name: str, *, field: str = "name") -> str:
    """A safe identity name that is not the aggregator's."""
    check_identity_name(name, field=field)
    if name == AGGREGATOR_NAME:
        raise PkiError(
            f"{field}: {name!r} is reserved for the aggregator's certificate",
            hint="pick another collaborator name",
        )
    return name


def organization_for(workspace_name: str) -> str:
    """The organization (O=) for a federation named after its workspace directory."""
    name = workspace_name.strip()[:_MAX_ORGANIZATION]
    return name or DEFAULT_ORGANIZATION


def subject(common_name: str, *, organization: str | None, unit: str | None = None) -> x509.Name:
    """A subject that says what the certificate is: CN, then OU (the role), then O."""
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def common_name(name: x509.Name) -> str | None:
    """The (first) CN of ``name``, or None."""
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else value.decode()


def organization(name: x509.Name) -> str | None:
    """The (first) O of ``name``, or None."""
    values = name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else value.decode()


def host_general_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """The SANs for an aggregator reachable at ``hosts`` (DNS names and IP addresses).

    ``localhost`` also gets 127.0.0.1 and ::1: clients that dial "localhost" may
    connect over either loopback address, and some verify the address they dialed.
    """
    names: list[x509.GeneralName] = []
    for host in hosts:
        for general_name in _parse_host(host):
            if general_name not in names:
                names.append(general_name)
    if not names:
        raise PkiError(
            "the aggregator certificate needs at least one host name or IP address",
            hint="set network.agg_addr in plan/plan.yaml or pass --host",
        )
    return names


def _parse_host(host: str) -> list[x509.GeneralName]:
    text = host.strip()
    try:
        address = ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        pass
    else:
        if address.is_unspecified:
            raise PkiError(
                f"host {host!r} is where a server listens, not an address clients dial",
                hint="name the host or IP the collaborators connect to (--host)",
            )
        return [x509.IPAddress(address)]
    dns_name = text.lower().removesuffix(".")
    labels = dns_name.split(".")
    if len(dns_name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise PkiError(
            f"host {host!r} is neither an IP address nor a valid DNS name",
            hint="use letters, digits, '-' and '.' (no wildcards, no spaces)",
        )
    if dns_name == "localhost":
        return [x509.DNSName(dns_name), *_LOOPBACK]
    return [x509.DNSName(dns_name)]
