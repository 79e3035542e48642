"""`fx pki ...`: the federation's CA, its certificates, CSR signing and revocation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.markup import escape
from rich.table import Column, Table

from fx.cli.console import console, err_console
from fx.cli.options import WorkspaceOption, workspace_paths
from fx.errors import PkiError, PlanError, WorkspaceError
from fx.pki.keys import KeyType
from fx.pki.roles import Role

if TYPE_CHECKING:
    from fx.pki.csr import CertificateRequest
    from fx.pki.inspect import CertificateInfo
    from fx.pki.workspace import CertifyReport
    from fx.workspace.paths import WorkspacePaths

app = typer.Typer(no_args_is_help=True)

KeyTypeOption = typer.Option(KeyType.ECDSA_P384, "--key-type", help="Key algorithm.")
DaysOption = typer.Option(365, "--days", min=1, help="Days the certificate is valid.")
_WIDE = 110  # `fx pki list` shows the file column from this console width on


@app.command("init")
def init(
    workspace: Path | None = WorkspaceOption,
    key_type: KeyType = KeyTypeOption,
    organization: str | None = typer.Option(
        None, "--organization", help="O= of every certificate (default: the workspace's name)."
    ),
) -> None:
    """Create the root CA and the signing CA (kept if they exist)."""
    from fx.pki.workspace import init_ca

    paths = workspace_paths(workspace)
    _, report = init_ca(paths, key_type=key_type, organization=organization)
    _print_report(report, paths)


@app.command("certify")
def certify(
    workspace: Path | None = WorkspaceOption,
    hosts: list[str] | None = typer.Option(
        None,
        "--host",
        help="Another DNS name or IP collaborators dial (repeatable); network.agg_addr is "
        "always included unless it is 0.0.0.0 / ::.",
    ),
    aggregator_only: bool = typer.Option(
        False,
        "--aggregator-only",
        help="Certify the aggregator only: collaborators send CSRs (`fx pki csr`).",
    ),
    key_type: KeyType = KeyTypeOption,
    days: int = DaysOption,
) -> None:
    """CA, aggregator and collaborator certificates for this workspace, on one box.

    Idempotent: what exists is kept, what is missing (a new collaborator in
    plan/cols.yaml) is added.
    """
    from fx.pki.workspace import certify_workspace
    from fx.plan.loader import load_collaborator_names, load_plan

    paths = workspace_paths(workspace)
    agg_addr = load_plan(paths).network.agg_addr
    collaborators = [] if aggregator_only else load_collaborator_names(paths)
    report = certify_workspace(
        paths,
        aggregator_hosts=_aggregator_hosts(agg_addr, hosts or []),
        collaborators=collaborators,
        key_type=key_type,
        days=days,
    )
    _print_report(report, paths)


@app.command("csr")
def csr(
    name: str | None = typer.Option(
        None,
        "--name",
        help="Collaborator name (as in plan/cols.yaml); 'aggregator' by default "
        "for --role aggregator.",
    ),
    role: Role = typer.Option(Role.COLLABORATOR, "--role", help="What the certificate is for."),
    sans: list[str] | None = typer.Option(
        None,
        "--san",
        help="Aggregator only: a DNS name or IP collaborators dial (repeatable; "
        "default: network.agg_addr).",
    ),
    key_type: KeyType = KeyTypeOption,
    out: Path | None = typer.Option(None, "--out", help="CSR file (default: beside the key)."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Make a key (kept here, 0600) and a CSR to send to the CA; print its fingerprint."""
    from fx.pki.exchange import create_request
    from fx.pki.names import AGGREGATOR_NAME

    paths = workspace_paths(workspace)
    if name is None:
        if role is Role.COLLABORATOR:
            raise PkiError("--name is required for a collaborator CSR", hint="pass --name NAME")
        name = AGGREGATOR_NAME
    hosts = list(sans or [])
    if role is Role.AGGREGATOR and not hosts:
        from fx.plan.loader import load_plan

        hosts = [load_plan(paths).network.agg_addr]
    result = create_request(paths, name=name, role=role, hosts=hosts, key_type=key_type, out=out)
    request = result.request
    key_note = "created" if result.key_created else "kept (existing key reused)"
    _say(f"key:  {escape(_shown(result.key_path, paths))}  [dim]{key_note}, stays here[/]")
    _say(f"CSR:  {escape(_shown(result.csr_path, paths))}")
    sans_note = f"  SANs: {', '.join(request.hosts)}" if request.hosts else ""
    _say(f"      {request.role.value} {escape(request.name)}{escape(sans_note)}")
    _say(f"\nCSR fingerprint: [bold]{request.fingerprint}[/]")
    _say(
        "Send the CSR to the CA and read them this fingerprint over another channel "
        "(phone, video call). They run:"
    )
    _say(f"  fx pki sign {escape(result.csr_path.name)} --fingerprint {request.fingerprint}")


@app.command("sign")
def sign(
    request_path: Path = typer.Argument(..., metavar="REQUEST", help="The CSR file to sign."),
    fingerprint: str | None = typer.Option(
        None, "--fingerprint", help="The fingerprint the site read to you (skips the prompt)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Sign without asking (for scripts)."),
    days: int = DaysOption,
    out: Path | None = typer.Option(
        None, "--out", help="Bundle file (default: beside the CSR, ending .bundle.pem)."
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Sign a CSR with the signing CA; write a bundle (certificate + chain) for the site."""
    from fx.pki.exchange import (
        bundle_path_for,
        check_request_fingerprint,
        read_checked_request,
        sign_request,
    )
    from fx.pki.store import require_ca

    paths = workspace_paths(workspace)
    require_ca(paths)
    request = read_checked_request(request_path)
    _print_request(request)
    if fingerprint is not None:
        check_request_fingerprint(request, fingerprint)
        _say("fingerprint matches")
    elif not yes and not typer.confirm(
        "Does the site's fingerprint match, and should it be signed?", default=False
    ):
        raise PkiError(f"{request_path}: not signed", hint="sign once the fingerprint matches")
    result = sign_request(paths, request, out=out or bundle_path_for(request_path), days=days)
    _warn_if_not_in_cols(paths, request)
    _say(
        f"\nSigned {result.info.role} [bold]{escape(result.info.name)}[/], serial "
        f"{result.info.serial_hex}, valid until {result.info.not_after:%Y-%m-%d}"
    )
    _say(f"bundle: {escape(str(result.bundle_path))}")
    _say(f"root CA fingerprint: [bold]{result.root_fingerprint}[/]")
    _say(
        "Send the bundle to the site and tell them the root fingerprint "
        f"(at least {result.root_short_fingerprint}). They run:"
    )
    _say(
        f"  fx pki import {escape(result.bundle_path.name)} "
        f"--root-fingerprint {result.root_short_fingerprint}"
    )


@app.command("import")
def import_(
    bundle_path: Path = typer.Argument(..., metavar="BUNDLE", help="The bundle the CA sent."),
    root_fingerprint: str | None = typer.Option(
        None, "--root-fingerprint", help="The root CA fingerprint the CA told you."
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Install a signed bundle next to its key, after checking key, chain and root."""
    from fx.pki.exchange import import_bundle

    paths = workspace_paths(workspace)
    result = import_bundle(paths, bundle_path, root_fingerprint=root_fingerprint)
    info = result.info
    _say(
        f"Installed {info.role} [bold]{escape(info.name)}[/] (serial {info.serial_hex}, "
        f"valid until {info.not_after:%Y-%m-%d})"
    )
    _say(f"  certificate:    {escape(_shown(result.cert_path, paths))}")
    _say(f"  chain of trust: {escape(_shown(result.chain_path, paths))}")
    if result.root_checked_against is None:
        _warn(
            f"[yellow]warning[/]: root CA fingerprint {result.root_fingerprint} was not "
            "checked; compare it with the one the CA told you, or import again with "
            "--root-fingerprint"
        )
    else:
        _say(
            f"  root CA {result.root_fingerprint} matches "
            f"{escape(_shown(Path(result.root_checked_against), paths))}"
        )


@app.command("show")
def show(
    target: str | None = typer.Argument(
        None,
        metavar="[NAME|SERIAL|PATH]",
        help="A certificate name, serial, or file (default: the chain of trust).",
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Subject, SANs, role, issuer, serial, validity and fingerprint of a certificate."""
    from fx.pki.crl import RevocationList
    from fx.pki.inspect import describe_certificate
    from fx.pki.inventory import current_certificate
    from fx.pki.pem import load_certificates, read_certificates

    paths: WorkspacePaths | None
    if target is not None and Path(target).is_file():
        path = Path(target)
        data = path.read_bytes()
        if b"CERTIFICATE REQUEST" in data:
            from fx.pki.csr import read_request

            _print_request(read_request(data, path))
            return
        try:
            paths = workspace_paths(workspace)
        except WorkspaceError:
            paths = None  # a file outside any workspace: no CRL to consult
        shown = [(cert, path) for cert in load_certificates(data, path)]
    else:
        paths = workspace_paths(workspace)
        if target is not None:
            found = current_certificate(paths, target)
            shown = [(found.cert, found.path)]
        elif paths.cert_chain.is_file():
            shown = [(cert, paths.cert_chain) for cert in read_certificates(paths.cert_chain)]
        else:
            raise PkiError(
                f"{paths.cert_chain} does not exist: this workspace has no PKI yet",
                hint="run `fx pki certify` (or `fx pki init`)",
            )
    revoked = RevocationList(paths.crl).revoked_serials() if paths is not None else frozenset()
    for index, (cert, path) in enumerate(shown):
        if index:
            _say()
        info = describe_certificate(cert)
        _print_info(info, path, paths, revoked=info.serial in revoked)


@app.command("list")
def list_(workspace: Path | None = WorkspaceOption) -> None:
    """Every certificate in the workspace, with its status."""
    from fx.pki.crl import RevocationList
    from fx.pki.inspect import CertStatus
    from fx.pki.inventory import workspace_certificates

    paths = workspace_paths(workspace)
    revoked = RevocationList(paths.crl).revoked_serials()
    with_files = console.width >= _WIDE  # the file column only where it fits
    columns = [
        Column("name", no_wrap=True),
        Column("role", no_wrap=True),
        Column("serial", no_wrap=True),
        Column("expires", no_wrap=True),
        Column("days", justify="right", no_wrap=True),
        Column("status", no_wrap=True),
    ]
    if with_files:
        columns.append(Column("file", overflow="fold"))
    table = Table(*columns, box=box.SIMPLE_HEAD, pad_edge=False)
    styles = {
        CertStatus.VALID: "green",
        CertStatus.EXPIRING_SOON: "yellow",
        CertStatus.EXPIRED: "red",
        CertStatus.REVOKED: "red",
        CertStatus.NOT_YET_VALID: "yellow",
    }
    for found in workspace_certificates(paths):
        info = found.info
        status = info.status(revoked=info.serial in revoked)
        row = [
            escape(info.name),
            info.role,
            _short_serial(info.serial_hex),
            f"{info.not_after:%Y-%m-%d}",
            str(info.days_left()),
            f"[{styles[status]}]{status.value}[/]",
        ]
        if with_files:
            row.append(escape(_shown(found.path, paths)))
        table.add_row(*row)
    console.print(table)  # tables size themselves


@app.command("revoke")
def revoke(
    target: str = typer.Argument(..., metavar="NAME|SERIAL", help="A certificate name or serial."),
    reason: str | None = typer.Option(
        None,
        "--reason",
        help="CRL reason, e.g. key-compromise, superseded, cessation-of-operation.",
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Revoke a certificate; the aggregator refuses it from its next connection on.

    cert/crl.pem is re-signed by the signing CA with the new entry.
    """
    from fx.pki.crl import parse_reason
    from fx.pki.lifecycle import revoke as revoke_certificates

    paths = workspace_paths(workspace)
    result = revoke_certificates(
        paths, target, reason=parse_reason(reason) if reason is not None else None
    )
    for info in result.revoked:
        _say(f"revoked {info.role} [bold]{escape(info.name)}[/], serial {info.serial_hex}")
    for info in result.already_revoked:
        _say(f"already revoked: {info.role} {escape(info.name)}, serial {info.serial_hex}")
    if result.revoked:
        _say(
            f"updated {escape(_shown(paths.crl, paths))}; an aggregator running from this "
            "workspace enforces it on its next connection (copy it to an aggregator elsewhere)"
        )


@app.command("renew")
def renew(
    name: str = typer.Argument(..., help="The certificate's name (aggregator or a collaborator)."),
    days: int = DaysOption,
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Bundle file, when the key is held elsewhere (default: NAME.bundle.pem).",
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """A fresh certificate (new serial) for the same identity and key type."""
    from fx.pki.lifecycle import renew as renew_certificate

    paths = workspace_paths(workspace)
    result = renew_certificate(paths, name, days=days, bundle_path=out)
    _say(
        f"renewed {result.new.role} [bold]{escape(result.new.name)}[/]: serial "
        f"{result.new.serial_hex}, valid until {result.new.not_after:%Y-%m-%d}"
    )
    if result.cert_path is not None and result.key_path is not None:
        _say(f"  new key:         {escape(_shown(result.key_path, paths))}")
        _say(f"  new certificate: {escape(_shown(result.cert_path, paths))}")
    if result.bundle_path is not None:
        _say(
            f"  bundle: {escape(str(result.bundle_path))} (the key is held elsewhere: "
            "send the bundle to its owner to `fx pki import`)"
        )
    _say(
        f"The old certificate (serial {result.old.serial_hex}) stays valid until "
        f"{result.old.not_after:%Y-%m-%d}; to end it now: "
        f"fx pki revoke {result.old.serial_hex} --reason superseded"
    )


def _say(text: str = "") -> None:
    # soft_wrap: a fingerprint, serial or command is never broken across lines.
    console.print(text, soft_wrap=True)


def _warn(text: str) -> None:
    err_console.print(text, soft_wrap=True)


def _warn_if_not_in_cols(paths: WorkspacePaths, request: CertificateRequest) -> None:
    from fx.plan.loader import load_collaborator_names

    if request.role is not Role.COLLABORATOR:
        return
    try:
        names = load_collaborator_names(paths)
    except PlanError:
        return  # no readable cols.yaml here; signing does not depend on it
    if request.name not in names:
        _warn(
            f"[yellow]warning[/]: {escape(request.name)} is not in {escape(str(paths.cols))}; "
            "the aggregator refuses it until it is added"
        )


def _short_serial(serial_hex: str) -> str:
    # `fx pki revoke` and `show` accept any unique prefix of 8+ digits.
    return serial_hex if len(serial_hex) <= 10 else f"{serial_hex[:10]}…"


def _aggregator_hosts(agg_addr: str, extra: list[str]) -> list[str]:
    import ipaddress

    try:
        unspecified = ipaddress.ip_address(agg_addr.strip("[]")).is_unspecified
    except ValueError:
        unspecified = False
    # A bind-all address is not a name anyone dials; with --host given, leave it out.
    if unspecified and extra:
        return extra
    return [agg_addr, *extra]


def _print_request(request: CertificateRequest) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_row("CSR", escape(request.source))
    table.add_row("subject", escape(request.subject))
    table.add_row("role", request.role.value)
    table.add_row("SANs", escape(", ".join(request.hosts) or request.name))
    table.add_row("key", request.key_type.value)
    table.add_row("fingerprint", f"[bold]{request.fingerprint}[/]")
    console.print(table)  # tables size themselves


def _print_info(
    info: CertificateInfo, path: Path, paths: WorkspacePaths | None, *, revoked: bool
) -> None:
    status = info.status(revoked=revoked)
    table = Table.grid(padding=(0, 2))
    table.add_row("name", f"[bold]{escape(info.name)}[/]")
    table.add_row("role", info.role)
    table.add_row("subject", escape(info.subject))
    table.add_row("SANs", escape(", ".join(info.identities)) or "-")
    table.add_row("issuer", escape(info.issuer))
    table.add_row("serial", info.serial_hex)
    table.add_row("valid from", f"{info.not_before:%Y-%m-%d %H:%M} UTC")
    table.add_row("valid until", f"{info.not_after:%Y-%m-%d %H:%M} UTC")
    table.add_row("days left", str(info.days_left()))
    table.add_row("status", status.value)
    table.add_row("key", info.key_type)
    table.add_row("SHA-256", info.fingerprint)
    table.add_row("file", escape(_shown(path, paths)))
    console.print(table)  # tables size themselves


def _print_report(report: CertifyReport, paths: WorkspacePaths) -> None:
    for entry in report.created:
        _say(f"[green]created[/] {escape(entry.what):<34} {escape(_shown(entry.path, paths))}")
    for entry in report.kept:
        _say(f"[dim]kept[/]    {escape(entry.what):<34} {escape(_shown(entry.path, paths))}")
    for warning in report.warnings:
        _warn(f"[yellow]warning[/]: {escape(warning)}")


def _shown(path: Path, paths: WorkspacePaths | None) -> str:
    """``path`` relative to the workspace when it is inside it."""
    if paths is None:
        return str(path)
    try:
        return str(path.resolve().relative_to(paths.root))
    except ValueError:
        return str(path)
