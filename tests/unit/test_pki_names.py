"""Identity names, host SANs, fingerprints and serials."""

from __future__ import annotations

import hashlib

import pytest

from fx.errors import PkiError
from fx.pki.fingerprints import fingerprint_matches, full_fingerprint, short_fingerprint
from fx.pki.identity import certificate_identities, certificate_serial
from fx.pki.inspect import format_serial, parse_serial
from fx.pki.keys import KeyType, load_private_key, private_key_pem
from fx.pki.names import check_collaborator_name, host_general_names, is_identity_name


@pytest.mark.parametrize("name", ["site-a", "a", "s1", "x" * 63])
def test_safe_names(name: str) -> None:
    assert is_identity_name(name)


@pytest.mark.parametrize("name", ["", "Site", "-a", "a-", "a_b", "a.b", "../a", "x" * 64, "é"])
def test_unsafe_names(name: str) -> None:
    assert not is_identity_name(name)
    with pytest.raises(PkiError, match="not a safe identity name"):
        check_collaborator_name(name)


def test_hosts_are_deduplicated_in_order() -> None:
    names = host_general_names(["localhost", "LOCALHOST", "127.0.0.1", "Agg.Example.org."])
    assert [str(name.value) for name in names] == [
        "localhost",
        "127.0.0.1",
        "::1",
        "agg.example.org",
    ]


def test_fingerprints() -> None:
    data = b"certificate bytes"
    digest = hashlib.sha256(data).hexdigest().upper()
    assert full_fingerprint(data).replace(":", "") == digest
    short = short_fingerprint(data)
    assert short == "-".join(digest[i : i + 4] for i in range(0, 16, 4))
    assert fingerprint_matches(short, data, field="f")
    assert fingerprint_matches(full_fingerprint(data).lower(), data, field="f")
    assert not fingerprint_matches("0" * 16, data, field="f")


def test_serials_round_trip() -> None:
    assert parse_serial(format_serial(0xABC123)) == 0xABC123
    assert parse_serial("0x0a:bc") == 0xABC
    assert parse_serial("site-a") is None


def test_identity_of_garbage_is_a_pki_error() -> None:
    with pytest.raises(PkiError, match="no readable PEM certificate"):
        certificate_identities(b"junk")
    with pytest.raises(PkiError):
        certificate_serial(b"")


def test_key_round_trip() -> None:
    key = KeyType.ECDSA_P384.generate()
    loaded = load_private_key(private_key_pem(key).data, "k.pem")
    assert KeyType.of(loaded) is KeyType.ECDSA_P384
    with pytest.raises(PkiError, match=r"k\.pem: not a readable"):
        load_private_key(b"nope", "k.pem")
