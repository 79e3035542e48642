"""The multi-party flow, where a key never leaves its owner.

site:  create_request  -> key (0600) + CSR; the CSR's fingerprint is read aloud
CA:    sign_request    -> bundle (certificate + chain); the root fingerprint is sent
site:  import_bundle   -> checks key, chain and root fingerprint; installs
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fx.errors import PkiError
from fx.pki.bundle import Bundle, read_bundle, verify_bundle
from fx.pki.csr import CertificateRequest, create_csr, csr_der, csr_pem, read_request
from fx.pki.fingerprints import certificate_der, fingerprint_matches, short_fingerprint
from fx.pki.inspect import CertificateInfo, describe_certificate
from fx.pki.inventory import leaf_paths
from fx.pki.issue import LEAF_DAYS
from fx.pki.keys import KeyType, key_matches, private_key_pem, read_private_key
from fx.pki.names import check_identity_name, common_name
from fx.pki.pem import certificate_pem, read_certificates
from fx.pki.roles import Role
from fx.pki.store import record_issued, require_ca
from fx.workspace.paths import WorkspacePaths


@dataclass(frozen=True)
class RequestResult:
    """What ``create_request`` wrote."""

    request: CertificateRequest
    key_path: Path
    csr_path: Path
    key_created: bool


def csr_path_for(key_path: Path) -> Path:
    """Where the CSR for the key at ``key_path`` goes: beside it, ending in .csr."""
    return key_path.with_suffix(".csr")


def bundle_path_for(request_path: Path) -> Path:
    """Where the bundle for a CSR goes by default: beside it, ending in .bundle.pem."""
    return request_path.with_name(f"{request_path.stem}.bundle.pem")


def create_request(
    paths: WorkspacePaths,
    *,
    name: str,
    role: Role,
    hosts: Sequence[str] = (),
    key_type: KeyType = KeyType.ECDSA_P384,
    out: Path | None = None,
) -> RequestResult:
    """Make (or reuse) the key of ``name`` in this workspace and write a CSR for it.

    An existing key is reused rather than replaced: it may already back a
    certificate in use.
    """
    _, key_path = leaf_paths(paths, role, name)
    csr_path = out or csr_path_for(key_path)
    key_created = not key_path.exists()
    key = key_type.generate() if key_created else read_private_key(key_path)
    csr = create_csr(key, name=name, role=role, hosts=hosts)
    if key_created:
        private_key_pem(key).write_to_path(key_path)
    csr_pem(csr).write_to_path(csr_path)
    request = read_request(csr_pem(csr).data, csr_path)
    return RequestResult(request, key_path, csr_path, key_created)


@dataclass(frozen=True)
class SignResult:
    """What ``sign_request`` issued and wrote."""

    info: CertificateInfo
    bundle: Bundle
    bundle_path: Path

    @property
    def root_fingerprint(self) -> str:
        return self.bundle.root_fingerprint

    @property
    def root_short_fingerprint(self) -> str:
        return self.bundle.root_short_fingerprint


def sign_request(
    paths: WorkspacePaths,
    request: CertificateRequest,
    *,
    out: Path,
    days: int = LEAF_DAYS,
) -> SignResult:
    """Issue the certificate ``request`` (already checked and confirmed) asks for, record
    it in the CA, and write the bundle to ``out``."""
    ca = require_ca(paths)
    cert = ca.signing.issue_cert(
        request.public_key, *request.hosts, role=request.role, name=request.name, days=days
    )
    record_issued(paths, cert)
    bundle = Bundle(leaf=cert, intermediates=(ca.signing.cert,), root=ca.root.cert)
    bundle.pem.write_to_path(out)
    return SignResult(describe_certificate(cert), bundle, out)


def read_checked_request(path: Path) -> CertificateRequest:
    """The CSR at ``path``, checked (see ``fx.pki.csr.read_request``)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise PkiError(f"{path}: CSR not found") from exc
    return read_request(data, path)


def check_request_fingerprint(request: CertificateRequest, expected: str) -> None:
    """PkiError unless ``expected`` is the fingerprint of the CSR."""
    if not fingerprint_matches(expected, csr_der(request.csr), field="--fingerprint"):
        raise PkiError(
            f"{request.source}: the CSR's fingerprint is {request.fingerprint}, "
            f"not {expected}: this is not the CSR the site made",
            hint="ask the site to read its fingerprint again, or for a fresh CSR",
        )


@dataclass(frozen=True)
class ImportResult:
    """What ``import_bundle`` installed, and how the root was checked."""

    info: CertificateInfo
    cert_path: Path
    chain_path: Path
    root_fingerprint: str
    root_checked_against: str | None
    """"--root-fingerprint", the workspace's existing cert_chain.pem, or None (unchecked)."""


def import_bundle(
    paths: WorkspacePaths,
    source: Path,
    *,
    root_fingerprint: str | None = None,
) -> ImportResult:
    """Install the bundle at ``source`` into the workspace that holds its key.

    Refuses a bundle whose certificate is not for the local key, whose chain
    does not verify, or whose root is not the expected one: the fingerprint
    given, else the root of the workspace's existing cert_chain.pem.
    """
    try:
        data = source.read_bytes()
    except FileNotFoundError as exc:
        raise PkiError(f"{source}: bundle not found") from exc
    bundle = read_bundle(data, source)
    checked_against = _check_root(paths, bundle, source, root_fingerprint)
    role = verify_bundle(bundle, source)
    name = common_name(bundle.leaf.subject)
    if name is None:
        raise PkiError(f"{source}: the certificate has no CN (its name)")
    check_identity_name(name, field=f"{source}: CN")
    cert_path, key_path = leaf_paths(paths, role, name)
    if not key_path.exists():
        raise PkiError(
            f"{key_path} does not exist: this workspace holds no key for {role.value} {name!r}",
            hint="import the bundle in the workspace where `fx pki csr` made the key",
        )
    if not key_matches(read_private_key(key_path), bundle.leaf.public_key()):
        raise PkiError(
            f"{source}: the certificate is not for the key in {key_path}",
            hint="import the bundle signed from this key's CSR, or make a new CSR",
        )
    certificate_pem(bundle.leaf).write_to_path(cert_path)
    certificate_pem(*bundle.chain).write_to_path(paths.cert_chain)
    return ImportResult(
        info=describe_certificate(bundle.leaf),
        cert_path=cert_path,
        chain_path=paths.cert_chain,
        root_fingerprint=bundle.root_fingerprint,
        root_checked_against=checked_against,
    )


def _check_root(
    paths: WorkspacePaths, bundle: Bundle, source: Path, expected: str | None
) -> str | None:
    root_der = certificate_der(bundle.root)
    if expected is not None:
        if not fingerprint_matches(expected, root_der, field="--root-fingerprint"):
            raise PkiError(
                f"{source}: the bundle's root CA has fingerprint {bundle.root_fingerprint}, "
                f"not {expected}: it was not issued by the federation's CA",
                hint="ask the CA for the bundle again and compare fingerprints out of band",
            )
        return "--root-fingerprint"
    if paths.cert_chain.exists():
        trusted_root = read_certificates(paths.cert_chain)[-1]
        if certificate_der(trusted_root) != root_der:
            raise PkiError(
                f"{source}: the bundle's root CA ({short_fingerprint(root_der)}) is not the one "
                f"{paths.cert_chain} trusts ({short_fingerprint(certificate_der(trusted_root))})",
                hint="ask the CA for the bundle again, or pass --root-fingerprint "
                "if the federation's CA really changed",
            )
        return str(paths.cert_chain)
    return None
