"""`fx plan ...`: initialize, validate and show the plan."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from fx.cli.console import console, err_console
from fx.cli.options import WorkspaceOption, workspace_paths

app = typer.Typer(no_args_is_help=True)


@app.command("initialize")
def initialize(workspace: Path | None = WorkspaceOption) -> None:
    """Write the plan in full, save the initial model, record the federation.

    Validates plan/ first; writes save/init.safetensors and plan/federation.json.
    """
    from fx.workspace.initialize import initialize as initialize_workspace
    from fx.workspace.initialize import record_path

    paths = workspace_paths(workspace)
    done = initialize_workspace(paths)
    record = done.record
    if done.defaulted:
        console.print(
            f"wrote {len(done.defaulted)} default(s) into plan/plan.yaml: "
            f"{', '.join(done.defaulted)}"
        )
    model = record.init_model
    console.print(f"Initialized federation [bold]{record.federation_id}[/]")
    console.print(f"  template       {escape(record.template)}")
    console.print(f"  model runner   {escape(record.model_runner)}")
    console.print(f"  aggregation    {escape(record.aggregation)}")
    console.print(f"  rounds         {record.rounds_to_train}")
    console.print(f"  collaborators  {', '.join(done.workspace.collaborators)}")
    console.print(
        f"  initial model  {model.path}: {model.tensors} tensors, {model.parameters:,} values, "
        f"{model.bytes:,} bytes, sha256 {model.sha256}"
    )
    console.print(f"  record         {record_path(paths).relative_to(paths.root)}")
    console.print("Next: fx pki certify, then fx aggregator start (or fx workspace export)")


@app.command("validate")
def validate(
    workspace: Path | None = WorkspaceOption,
    no_import: bool = typer.Option(
        False,
        "--no-import",
        help="Do not import src/ (model.runner, a module:Class aggregation), e.g. on a "
        "machine without the template's framework.",
    ),
) -> None:
    """Check plan.yaml, cols.yaml and data.yaml against workspace_schema/ and each other."""
    from fx.plan.validate import validate_workspace
    from fx.workspace.initialize import stale_record_warning

    paths = workspace_paths(workspace)
    checked = validate_workspace(paths, import_code=not no_import)
    plan = checked.plan
    console.print(
        "plan/plan.yaml, plan/cols.yaml and plan/data.yaml are valid"
        + (" (src/ not imported)" if no_import else "")
    )
    console.print(f"  federation     {plan.federation_id}")
    console.print(f"  template       {escape(plan.template)}")
    console.print(f"  aggregation    {escape(plan.aggregator.aggregation)}")
    console.print(f"  rounds         {plan.aggregator.rounds_to_train}")
    tasks = ", ".join(f"{task.name} ({task.kind})" for task in plan.tasks)
    console.print(f"  tasks          {escape(tasks)}")
    sites = ", ".join(f"{name} ({checked.data[name]})" for name in checked.collaborators)
    console.print(f"  collaborators  {escape(sites)}")
    warning = stale_record_warning(paths, plan.federation_id)
    if warning is not None:
        err_console.print(f"[yellow]warning[/]: {escape(warning)}", soft_wrap=True)


@app.command("show")
def show(
    workspace: Path | None = WorkspaceOption,
    as_json: bool = typer.Option(
        False, "--json", help='Print {"federation_id": ..., "plan": ...} as JSON.'
    ),
) -> None:
    """The effective plan (every default filled in) and its hash, the federation id."""
    import yaml

    from fx.plan.effective import effective_document
    from fx.plan.loader import load_plan

    paths = workspace_paths(workspace)
    plan = load_plan(paths)
    effective = effective_document(plan.document)
    if as_json:
        payload = {
            "federation_id": plan.federation_id,
            "defaulted": list(effective.defaulted),
            "plan": effective.document,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    # Plain text, not rich markup: the output is YAML a user may redirect into a file.
    typer.echo(f"# federation id: {plan.federation_id}")
    if effective.defaulted:
        typer.echo(
            "# at their defaults (not written in plan.yaml; `fx plan initialize` writes them): "
            + ", ".join(effective.defaulted)
        )
    typer.echo(
        yaml.safe_dump(effective.document, sort_keys=False, default_flow_style=False), nl=False
    )
