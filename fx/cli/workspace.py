"""`fx workspace ...`"""

from __future__ import annotations

from pathlib import Path

import typer

from fx.cli.console import console

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
