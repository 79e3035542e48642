"""`fx collaborator start`: join the federation and work until it is over."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from fx.cli.console import console, setup_logging, warn_loudly
from fx.cli.options import WorkspaceOption, workspace_paths
from fx.errors import PlanError, RefusedError

app = typer.Typer(no_args_is_help=True)


@app.command("start")
def start(
    name: str = typer.Option(
        ..., "--name", "-n", help="This collaborator's name in plan/cols.yaml."
    ),
    workspace: Path | None = WorkspaceOption,
    connect_timeout: float | None = typer.Option(
        None, "--connect-timeout", help="Override collaborator.connect_timeout_s (seconds)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log everything to the console."),
) -> None:
    """Start a collaborator: train on local data in every round until the federation ends."""
    from fx.collaborator.core import Collaborator, TaskOutcome
    from fx.collaborator.events import EventListener, RoundSignal, round_handlers
    from fx.collaborator.runner import build_runner
    from fx.pki.workspace import require_collaborator_credentials
    from fx.plan.identity import differing_keys
    from fx.plan.loader import load_collaborator_names, load_data_path, load_plan
    from fx.process import tune_malloc
    from fx.transport.grpc.client import ClientSettings, GrpcAggregatorClient

    tune_malloc()  # before gRPC starts its threads: see fx/process.py
    paths = workspace_paths(workspace)
    plan = load_plan(paths)
    names = load_collaborator_names(paths)
    if name not in names:
        raise PlanError(
            f"{paths.cols}: no collaborator named {name!r}",
            hint=f"use one of: {', '.join(names)}",
        )
    setup_logging(paths.log_file(f"collaborator-{name}"), verbose=verbose)
    if plan.network.tls:
        tls = require_collaborator_credentials(paths, name)
    else:
        tls = None
        warn_loudly("network.tls is false: this collaborator sends its weights UNENCRYPTED.")

    runner = build_runner(
        paths.root,
        plan.model.runner,
        data_dir=load_data_path(paths, name),
        settings=plan.model.settings,
        collaborator=name,
    )
    settings = ClientSettings.from_plan(
        plan, name, connect_timeout_s=connect_timeout or plan.collaborator.connect_timeout_s
    )
    client = GrpcAggregatorClient(settings, tls=tls)
    # Lifecycle events from the aggregator wake the task loop the moment a round opens.
    signal = RoundSignal()
    listener = EventListener(
        lambda: client.subscribe(replay=True),
        round_handlers(signal, name=name),
        on_live=signal.set_live,
    )
    try:
        description = client.describe()
        if description.federation_id != plan.federation_id:
            keys = differing_keys(plan.shared_document, description.plan)
            raise RefusedError(
                f"this workspace's plan differs from the aggregator's in: {', '.join(keys)}",
                hint="use the federation's plan/plan.yaml unchanged",
            )
        client.start_heartbeat()
        listener.start()
        console.print(
            f"{name}: joined federation {plan.federation_id[:12]} at {settings.target} "
            f"(round {description.round + 1}/{description.rounds_to_train})"
        )

        def report(outcome: TaskOutcome) -> None:
            scores = "  ".join(f"{k} {v:.4f}" for k, v in outcome.metrics.items())
            status = "" if outcome.accepted else f"  [yellow]refused: {outcome.reason}[/]"
            label = (
                "final pass"
                if outcome.round >= description.rounds_to_train
                else f"round {outcome.round + 1}/{description.rounds_to_train}"
            )
            console.print(f"{name}: {label:>11}  {outcome.task:<10} {scores}{status}")

        rounds = Collaborator(
            name=name,
            api=client,
            runner=runner,
            plan=plan,
            on_task_done=report,
            round_signal=signal,
        ).run()
    finally:
        listener.close()
        client.close()
    logging.getLogger("fx.collaborator").info("finished after %d rounds", rounds)
    console.print(f"{name}: federation finished ({rounds} rounds worked)")


@app.command("create")
def create(
    name: str = typer.Option(
        ..., "--name", "-n", help="The new collaborator's name (its certificate identity)."
    ),
    data: str | None = typer.Option(
        None,
        "--data",
        help="Its data directory, relative to the workspace or absolute (default: data/NAME).",
    ),
    workspace: Path | None = WorkspaceOption,
) -> None:
    """Add a collaborator to plan/cols.yaml and plan/data.yaml (the federation id is kept)."""
    from fx.workspace.collaborators import add_collaborator

    paths = workspace_paths(workspace)
    added = add_collaborator(paths, name, data=data)
    console.print(f"Added collaborator [bold]{added.name}[/] with data {added.data}")
    console.print(f"  collaborators: {', '.join(added.collaborators)}")
    if not added.data_exists:
        console.print(f"  {added.data} does not exist here yet: put {added.name}'s data there")
    console.print("Next:")
    console.print("  fx pki certify                      # on one box; or, at the site:")
    console.print(f"  fx pki csr --name {added.name}      # and the CA signs it")
    console.print("  restart the aggregator so that it admits the new collaborator")
