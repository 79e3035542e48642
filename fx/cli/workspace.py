"""`fx workspace ...`"""

from __future__ import annotations

from pathlib import Path

import typer

from fx.cli.console import console, warn_loudly
from fx.cli.options import WorkspaceOption, workspace_paths

app = typer.Typer(no_args_is_help=True)


@app.command("create")
def create(
    prefix: Path = typer.Option(..., "--prefix", "-p", help="Directory of the new workspace."),
    template: str = typer.Option(
        "torch_cnn_digits", "--template", "-t", help="Template name (see `fx workspace templates`)."
    ),
    collaborators: int = typer.Option(
        2,
        "--collaborators",
        "-n",
        min=1,
        max=999,
        help="Number of collaborators in plan/cols.yaml.",
    ),
    rounds: int = typer.Option(5, "--rounds", min=1, help="aggregator.rounds_to_train."),
    agg_addr: str = typer.Option("localhost", "--agg-addr", help="network.agg_addr."),
    agg_port: int = typer.Option(50051, "--agg-port", min=1, max=65535, help="network.agg_port."),
) -> None:
    """Create a workspace from a template, with a complete plan and one data shard per site."""
    from fx.workspace.create import NetworkChoice, create_workspace, default_collaborator_names
    from fx.workspace.templates import get_template

    names = default_collaborator_names(collaborators)
    paths = create_workspace(
        get_template(template),
        prefix,
        collaborators=names,
        network=NetworkChoice(agg_addr, agg_port),
        rounds=rounds,
    )
    console.print(f"Created workspace [bold]{paths.root}[/] from template [bold]{template}[/]")
    console.print(f"  collaborators: {', '.join(names)}")
    console.print("Next:")
    console.print(f"  cd {prefix}")
    console.print("  fx pki certify")
    console.print("  fx aggregator start")
    for name in names:
        console.print(f"  fx collaborator start --name {name}")


@app.command("templates")
def templates() -> None:
    """List the templates with a one-line description each."""
    from rich.table import Table

    from fx.workspace.templates import available_templates

    table = Table("template", "description")
    for template in available_templates():
        table.add_row(template.name, template.description)
    console.print(table)


@app.command("export")
def export(
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Archive to write (default: ./<workspace name>.fx.tar.gz).",
        dir_okay=False,
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite the archive if it exists."),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """One archive with what a site needs: plan/, src/, requirements and the chain of trust.

    Never private keys, data, logs or saved models.
    """
    from fx.plan.validate import validate_workspace
    from fx.workspace.archive import default_archive, export_workspace
    from fx.workspace.initialize import stale_record_warning

    paths = workspace_paths(workspace)
    plan = validate_workspace(paths, import_code=False).plan
    stale = stale_record_warning(paths, plan.federation_id)
    if stale is not None:
        warn_loudly(f"{stale} before exporting: sites would see a record of another plan")
    result = export_workspace(paths, output or default_archive(paths), overwrite=force)
    console.print(
        f"Exported federation [bold]{plan.federation_id[:12]}[/] to [bold]{result.archive}[/] "
        f"({len(result.files)} files)"
    )
    if not result.has_chain:
        warn_loudly(
            "no cert/cert_chain.pem yet (run `fx pki certify` or `fx pki init` first): sites "
            "will have no chain of trust until they import their signed bundle"
        )
    console.print("Send it to each site. They run:")
    console.print(f"  fx workspace import {result.archive.name} --prefix DIR")


@app.command("import")
def import_(
    archive: Path = typer.Argument(..., metavar="ARCHIVE", help="An `fx workspace export`."),
    prefix: Path | None = typer.Option(
        None,
        "--prefix",
        "-p",
        help="Directory of the new workspace (default: the archive's name, in the current "
        "directory).",
    ),
    max_mib: int | None = typer.Option(
        None,
        "--max-mib",
        min=1,
        help="Refuse an archive whose files add up to more than this many MiB "
        "(default: 256; an export is code and configuration).",
        show_default=False,
    ),
) -> None:
    """Unpack an exported workspace, refusing unsafe entries; then make this site's key."""
    from fx.plan.loader import load_collaborator_names, load_plan
    from fx.workspace.archive import DEFAULT_MAX_IMPORT_MIB, default_prefix, import_workspace

    result = import_workspace(
        archive, prefix or default_prefix(archive), max_mib=max_mib or DEFAULT_MAX_IMPORT_MIB
    )
    paths = result.paths
    plan = load_plan(paths)
    names = load_collaborator_names(paths)
    console.print(
        f"Imported workspace [bold]{paths.root}[/] ({len(result.files)} files): federation "
        f"[bold]{plan.federation_id[:12]}[/], template {plan.template}"
    )
    console.print(f"  collaborators in plan/cols.yaml: {', '.join(names)}")
    root_option = ""
    if result.has_chain:
        root = _root_fingerprint(paths.cert_chain)
        console.print(
            f"  chain of trust: cert/cert_chain.pem, root CA [bold]{root}[/] "
            "(check it with the CA over another channel)"
        )
        root_option = f" --root-fingerprint {root}"
    name = names[0] if len(names) == 1 else "NAME"
    console.print(f"Next, as collaborator {name} (one of: {', '.join(names)}):")
    console.print(f"  cd {paths.root}")
    console.print(f"  fx pki csr --name {name}    # the key stays here")
    console.print("  # send the CSR to the CA and read them its fingerprint; they sign it")
    console.print(f"  fx pki import {name}.bundle.pem{root_option}")
    console.print("  # put your data where plan/data.yaml says (data/NAME by default)")
    console.print("  fx plan validate")
    console.print(f"  fx collaborator start --name {name}")


def _root_fingerprint(chain: Path) -> str:
    from fx.pki.fingerprints import certificate_der, short_fingerprint
    from fx.pki.pem import read_certificates

    return short_fingerprint(certificate_der(read_certificates(chain)[-1]))
