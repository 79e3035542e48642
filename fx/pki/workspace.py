"""The PKI of one workspace: certify it on one box, and load the credentials the
aggregator and collaborators start with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from fx.errors import PkiError
from fx.pki.ca import CertificateAuthority
from fx.pki.crl import RevocationList, build_crl, crl_pem
from fx.pki.identity import identities_of
from fx.pki.inspect import CertStatus, describe_certificate
from fx.pki.inventory import leaf_paths
from fx.pki.keys import (
    KeyType,
    PrivateKey,
    key_matches,
    load_private_key,
    private_key_pem,
    read_private_key,
)
from fx.pki.names import (
    AGGREGATOR_NAME,
    check_collaborator_name,
    common_name,
    host_general_names,
    organization_for,
)
from fx.pki.pem import certificate_pem, load_certificates, read_certificate, read_certificates
from fx.pki.roles import Role, role_of
from fx.pki.store import (
    CaFiles,
    FederationCa,
    issued_certificates,
    load_ca,
    no_ca_error,
    record_issued,
    save_ca,
)
from fx.workspace.paths import WorkspacePaths

_IN_FORCE = (CertStatus.VALID, CertStatus.EXPIRING_SOON)
_CERTIFY_HINT = "run `fx pki certify`"
_CSR_HINT = "or, where the CA is kept elsewhere, `fx pki csr` and `fx pki import` the bundle"


@dataclass(frozen=True)
class ReportEntry:
    """One thing certify looked at: what it is, and its file."""

    what: str
    path: Path


@dataclass
class CertifyReport:
    """What ``certify_workspace`` / ``init_ca`` created, what they kept as it was, and
    what in the kept files deserves attention."""

    created: list[ReportEntry] = field(default_factory=list)
    kept: list[ReportEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def init_ca(
    paths: WorkspacePaths,
    *,
    key_type: KeyType = KeyType.ECDSA_P384,
    organization: str | None = None,
) -> tuple[FederationCa, CertifyReport]:
    """The workspace's CA, created if it has none, with cert_chain.pem and an empty CRL.

    ``organization`` (the O= of every certificate) defaults to the workspace
    directory's name. An existing CA is kept: replacing it would invalidate
    every certificate it issued.
    """
    report = CertifyReport()
    files = CaFiles.of(paths)
    ca = load_ca(paths)
    if ca is None:
        if paths.cert_chain.exists():
            # This workspace trusts a CA kept elsewhere: a new one here would split the federation.
            raise no_ca_error(paths)
        root = CertificateAuthority.create_root(
            organization=organization or organization_for(paths.root.name), key_type=key_type
        )
        ca = FederationCa(root=root, signing=root.create_signing_ca())
        save_ca(paths, ca)
        report.created += [
            ReportEntry("root CA", files.root_cert),
            ReportEntry("signing CA", files.signing_cert),
        ]
    else:
        report.kept += [
            ReportEntry("root CA", files.root_cert),
            ReportEntry("signing CA", files.signing_cert),
        ]
    if paths.cert_chain.exists():
        report.kept.append(ReportEntry("chain of trust", paths.cert_chain))
        if read_certificates(paths.cert_chain)[-1] != ca.root.cert:
            report.warnings.append(
                f"{paths.cert_chain} does not end in this CA's root; peers using it will "
                "refuse these certificates"
            )
    else:
        ca.chain_pem.write_to_path(paths.cert_chain)
        report.created.append(ReportEntry("chain of trust", paths.cert_chain))
    if paths.crl.exists():
        report.kept.append(ReportEntry("revocation list", paths.crl))
    else:
        crl_pem(build_crl(ca.signing, [], number=1)).write_to_path(paths.crl)
        report.created.append(ReportEntry("revocation list", paths.crl))
    return ca, report


def certify_workspace(
    paths: WorkspacePaths,
    *,
    aggregator_hosts: Sequence[str],
    collaborators: Sequence[str],
    key_type: KeyType = KeyType.ECDSA_P384,
    days: int = 365,
) -> CertifyReport:
    """Everything a one-box federation needs: the CA (if none), the aggregator's
    certificate and key, one per collaborator, cert_chain.pem and the CRL.

    Idempotent: what exists is kept, what is missing is added. A certificate
    whose key is held elsewhere (signed from a CSR) counts as existing.
    """
    for name in collaborators:
        check_collaborator_name(name, field="collaborator")
    if days < 1:
        raise PkiError(f"--days {days}: a certificate must be valid at least 1 day")
    if aggregator_hosts:
        host_general_names(aggregator_hosts)  # refuse bad hosts before writing anything
    ca, report = init_ca(paths, key_type=key_type)
    revoked = RevocationList(paths.crl).revoked_serials()
    held_elsewhere = _live_issued(paths, revoked)
    leaves: list[tuple[Role, str, Sequence[str]]] = []
    if aggregator_hosts:
        leaves.append((Role.AGGREGATOR, AGGREGATOR_NAME, aggregator_hosts))
    leaves += [(Role.COLLABORATOR, name, ()) for name in dict.fromkeys(collaborators)]
    for role, name, hosts in leaves:
        cert_path, key_path = leaf_paths(paths, role, name)
        what = role.value if role is Role.AGGREGATOR else f"collaborator {name}"
        if cert_path.exists():
            report.kept.append(ReportEntry(what, cert_path))
            _check_kept(read_certificate(cert_path), what, name, hosts, revoked, report)
        elif (role, name) in held_elsewhere and not key_path.exists():
            entry = ReportEntry(f"{what} (its key is held elsewhere)", held_elsewhere[role, name])
            report.kept.append(entry)
        else:
            cert, created_key = _issue_leaf(
                ca, role, name, hosts, cert_path, key_path, key_type=key_type, days=days
            )
            record_issued(paths, cert)
            report.created.append(
                ReportEntry(what if created_key else f"{what} (for its existing key)", cert_path)
            )
    return report


def _live_issued(paths: WorkspacePaths, revoked: frozenset[int]) -> dict[tuple[Role, str], Path]:
    """The CA's record of leaves still in force, by (role, name)."""
    live: dict[tuple[Role, str], Path] = {}
    for path, cert in issued_certificates(paths):
        role, name = role_of(cert), common_name(cert.subject)
        status = describe_certificate(cert).status(revoked=cert.serial_number in revoked)
        if role is not None and name is not None and status in _IN_FORCE:
            live[role, name] = path
    return live


def _issue_leaf(
    ca: FederationCa,
    role: Role,
    name: str,
    hosts: Sequence[str],
    cert_path: Path,
    key_path: Path,
    *,
    key_type: KeyType,
    days: int,
) -> tuple[x509.Certificate, bool]:
    """Issue a leaf for the key at ``key_path`` (made if missing); write the certificate.
    Returns it, and whether the key was new."""
    new_key = not key_path.exists()
    if new_key:
        key: PrivateKey = key_type.generate()
        private_key_pem(key).write_to_path(key_path)
    else:
        key = read_private_key(key_path)
    cert = ca.signing.issue_cert(key.public_key(), *hosts, role=role, name=name, days=days)
    certificate_pem(cert).write_to_path(cert_path)
    return cert, new_key


def _check_kept(
    cert: x509.Certificate,
    what: str,
    name: str,
    hosts: Sequence[str],
    revoked: frozenset[int],
    report: CertifyReport,
) -> None:
    status = describe_certificate(cert).status(revoked=cert.serial_number in revoked)
    if status in (CertStatus.EXPIRED, CertStatus.REVOKED):
        report.warnings.append(
            f"{what}: the kept certificate is {status.value}; run `fx pki renew {name}`"
        )
    if hosts:
        wanted = {str(general_name.value) for general_name in host_general_names(hosts)}
        if not wanted <= set(identities_of(cert)):
            report.warnings.append(
                f"{what}: the kept certificate does not cover {', '.join(sorted(wanted))}; "
                "revoke it (`fx pki revoke aggregator`) and run certify again"
            )


def require_aggregator_credentials(paths: WorkspacePaths) -> tuple[bytes, bytes, bytes]:
    """(key, certificate, chain of trust) PEM for the aggregator's TLS server.

    The certificate is the leaf followed by the signing CA, what a TLS peer
    presents. PkiError naming the missing or mismatched file otherwise.
    """
    return _require_credentials(
        paths, Role.AGGREGATOR, AGGREGATOR_NAME, hint=f"{_CERTIFY_HINT}, {_CSR_HINT}"
    )


def require_collaborator_credentials(
    paths: WorkspacePaths, name: str
) -> tuple[bytes, bytes, bytes]:
    """(key, certificate, chain of trust) PEM for collaborator ``name``'s TLS client."""
    check_collaborator_name(name, field="collaborator name")
    return _require_credentials(
        paths,
        Role.COLLABORATOR,
        name,
        hint=f"{_CERTIFY_HINT} (with {name} in plan/cols.yaml), {_CSR_HINT} --name {name}",
    )


def _require_credentials(
    paths: WorkspacePaths, role: Role, name: str, *, hint: str
) -> tuple[bytes, bytes, bytes]:
    cert_path, key_path = leaf_paths(paths, role, name)
    what = "aggregator" if role is Role.AGGREGATOR else f"collaborator {name!r}"
    needed = ((key_path, "private key"), (cert_path, "certificate"), (paths.cert_chain, "chain"))
    for path, kind in needed:
        if not path.is_file():
            raise PkiError(f"{path} does not exist: no {kind} for the {what}", hint=hint)
    key_pem = key_path.read_bytes()
    chain_pem = paths.cert_chain.read_bytes()
    leaf = read_certificate(cert_path)
    _check_leaf(leaf, load_private_key(key_pem, key_path), cert_path, key_path, name)
    chain = load_certificates(chain_pem, paths.cert_chain)
    intermediates = [cert for cert in chain if cert.issuer != cert.subject]
    return key_pem, certificate_pem(leaf, *intermediates).data, chain_pem


def _check_leaf(
    leaf: x509.Certificate, key: PrivateKey, cert_path: Path, key_path: Path, name: str
) -> None:
    if not key_matches(key, leaf.public_key()):
        raise PkiError(
            f"{key_path} is not the key of {cert_path}",
            hint=f"run `fx pki renew {name}` for a matching pair",
        )
    status = describe_certificate(leaf).status(revoked=False)
    if status is CertStatus.EXPIRED:
        raise PkiError(
            f"{cert_path} expired on {leaf.not_valid_after_utc:%Y-%m-%d}",
            hint=f"run `fx pki renew {name}`",
        )
