"""Options several command groups share."""

from __future__ import annotations

from pathlib import Path

import typer

from fx.workspace.paths import WorkspacePaths

WorkspaceOption = typer.Option(
    None,
    "--workspace",
    "-w",
    help="Workspace directory (default: the current directory).",
    file_okay=False,
)


def workspace_paths(workspace: Path | None) -> WorkspacePaths:
    return WorkspacePaths.find(workspace)
