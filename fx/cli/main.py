"""The `fx` command: groups wired here, expected errors turned into one line and an exit code."""

from __future__ import annotations

import sys

import typer

from fx import __version__
from fx.cli import aggregator, collaborator, pki, plan, workspace
from fx.errors import ExitCode, FxError

app = typer.Typer(
    name="fx",
    help="Federated learning workspaces: a CA, a plan, one aggregator and many collaborators "
    "over mutual TLS.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold private keys
    add_completion=True,
)
app.add_typer(workspace.app, name="workspace", help="Create, export and import workspaces.")
app.add_typer(plan.app, name="plan", help="Initialize, validate and show the plan.")
app.add_typer(pki.app, name="pki", help="Certificate authority, certificates, CSRs and revocation.")
app.add_typer(aggregator.app, name="aggregator", help="Run the aggregator.")
app.add_typer(collaborator.app, name="collaborator", help="Add and run collaborators.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    pass


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting (for in-process tests)."""
    from fx.cli.console import err_console

    try:
        app(args=argv, prog_name="fx")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except FxError as error:
        err_console.print(f"[bold red]error[/]: {error.message}", soft_wrap=True)
        if error.hint:
            err_console.print(f"[dim]hint[/]: {error.hint}", soft_wrap=True)
        return int(error.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.OK)


def run() -> None:
    sys.exit(main())
