"""`fx aggregator start`: serve the plan over gRPC until the federation is done;
`fx aggregator status`: ask the running aggregator where the federation stands."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fx.cli.console import console, setup_logging, warn_loudly
from fx.cli.options import WorkspaceOption, workspace_paths
from fx.errors import PkiError, PlanError, WorkspaceError
from fx.workspace.paths import WorkspacePaths

if TYPE_CHECKING:
    from fx.transport.api import FederationStatus

app = typer.Typer(no_args_is_help=True)
log = logging.getLogger("fx.aggregator")

# How long a finished aggregator keeps trying to deliver queued webhook events
# before it exits anyway: a dead webhook never holds the process.
WEBHOOK_DRAIN_S = 3.0


@app.command("start")
def start(
    workspace: Path | None = WorkspaceOption,
    restart: bool = typer.Option(
        False, "--restart", help="Discard the checkpoint in save/ and begin at round 1."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before --restart."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log everything to the console."),
) -> None:
    """Start the aggregator: serve rounds until the plan's rounds_to_train are done.

    With a checkpoint in save/ (a previous run stopped or crashed), it resumes
    at the round after the last finished one.
    """
    from fx.aggregator.admission import Admission
    from fx.aggregator.checkpoint import CheckpointStore
    from fx.aggregator.core import Aggregator, RoundSummary
    from fx.aggregator.store import ModelStore
    from fx.algorithms.registry import load_aggregation
    from fx.collaborator.runner import build_initial_weights
    from fx.metrics import MetricRecord, MetricsLog
    from fx.notify.bus import Broadcast
    from fx.notify.events import Event, FanOut
    from fx.notify.webhooks import WebhookNotifier
    from fx.pki.crl import RevocationList
    from fx.pki.workspace import require_aggregator_credentials
    from fx.plan.loader import load_collaborator_names, load_plan
    from fx.plan.notifications import plan_webhooks
    from fx.process import tune_malloc
    from fx.tensors.safetensors_io import map_tensors, save_tensors
    from fx.transport.grpc.core_log import capture_core_log
    from fx.transport.grpc.credentials import server_credentials
    from fx.transport.grpc.server import AggregatorServicer, run_server

    tune_malloc()  # before gRPC starts its threads: see fx/process.py
    paths = workspace_paths(workspace)
    plan = load_plan(paths)
    collaborators = load_collaborator_names(paths)
    setup_logging(paths.log_file("aggregator"), verbose=verbose)
    network = plan.network

    if network.tls:
        credentials = server_credentials(*require_aggregator_credentials(paths))
    else:
        credentials = None
        warn_loudly(
            "network.tls is false: the aggregator accepts UNAUTHENTICATED, UNENCRYPTED "
            "connections. Never do this outside a single test machine."
        )

    checkpoints = CheckpointStore(paths.save)
    resume = checkpoints.load_state()
    if restart and resume is not None:
        if not yes:
            typer.confirm(
                f"Discard the progress in {paths.state_db} (next round {resume.next_round + 1})?",
                abort=True,
            )
        checkpoints.clear()
        resume = None
    if resume is not None:
        if resume.federation_id != plan.federation_id:
            raise PlanError(
                f"{paths.state_db} belongs to federation {resume.federation_id[:12]}, but "
                f"plan/plan.yaml is federation {plan.federation_id[:12]}",
                hint="restore the plan it was started with, or begin again with --restart",
            )
        if resume.finished:
            raise WorkspaceError(
                f"this federation already finished ({paths.state_db})",
                hint="the models are in save/; use --restart to train again from scratch",
            )
        initial = checkpoints.load_model(mapped=True)
        console.print(
            f"Resuming from checkpoint: round {resume.next_round + 1}, "
            f"model v{resume.model_version}, training {resume.training_uuid}"
        )
    else:
        if not paths.init_model.exists():
            paths.save.mkdir(parents=True, exist_ok=True)
            save_tensors(
                paths.init_model,
                build_initial_weights(paths.root, plan.model.runner, plan.model.settings),
            )
        # Mapped, not read: the model is encoded for download straight from the file,
        # so the aggregator never holds it in memory (docs/performance.md).
        initial = map_tensors(paths.init_model)

    rounds = plan.aggregator.rounds_to_train
    started = time.monotonic()

    def report(summary: RoundSummary) -> None:
        label = "final" if summary.final else f"round {summary.round + 1}/{rounds}"
        scores = "  ".join(
            f"{task}/{name} {value:.4f}" for (task, name), value in summary.metrics.items()
        )
        missing = f"  [yellow]missing: {', '.join(summary.missing)}[/]" if summary.missing else ""
        best = "  [green]best[/]" if summary.new_best else ""
        console.print(
            f"[bold]{label:>12}[/]  model v{summary.model_version}  {scores}  "
            f"{len(summary.reporters)}/{len(collaborators)} reported  "
            f"{summary.duration_s:.2f}s{best}{missing}"
        )
        log.info("round %d closed: %s", summary.round, summary)

    # Lifecycle events go to Subscribe streams and webhooks; metric records to GetMetricStream.
    event_stream: Broadcast[Event] = Broadcast()
    metric_stream: Broadcast[MetricRecord] = Broadcast()
    webhooks = WebhookNotifier(plan_webhooks(plan, paths.plan))
    aggregator = Aggregator(
        plan=plan,
        collaborators=collaborators,
        initial_model=initial,
        aggregation=load_aggregation(plan.aggregator.aggregation, paths.root),
        store=ModelStore(paths.save),
        metrics=MetricsLog(paths.metrics, on_record=metric_stream.publish),
        events=FanOut([event_stream.publish, webhooks]),
        on_round_closed=report,
        checkpoints=checkpoints,
        resume=resume,
    )
    del initial  # the aggregator owns the model now: keep no second reference to it
    admission = Admission(
        collaborators=collaborators,
        federation_id=plan.federation_id,
        # Only a CRL signed by the federation's CA counts; one that cannot be read or
        # verified makes admission refuse every collaborator (with that reason in the log).
        is_revoked=RevocationList(
            paths.crl, chain=paths.cert_chain if network.tls else None
        ).is_revoked,
        tls=network.tls,
    )
    servicer = AggregatorServicer(
        aggregator,
        chunk_bytes=network.chunk_bytes,
        events=event_stream,
        metrics=metric_stream,
        staging_dir=paths.save,  # uploads are staged on the workspace's disk, not in RAM
    )
    try:
        # TLS refusals happen in gRPC's C core, which only prints them to stderr.
        with (
            capture_core_log(),
            run_server(
                servicer,
                admission=admission,
                host=network.agg_addr,
                port=network.agg_port,
                credentials=credentials,
                chunk_bytes=network.chunk_bytes,
                keepalive_s=network.keepalive_s,
                # Each collaborator may hold a Subscribe stream, a long-poll, a transfer
                # and a heartbeat at once; dashboards add a stream each.
                max_workers=max(16, 5 * len(collaborators) + 8),
            ) as port,
        ):
            console.print(
                f"Aggregator listening on {network.agg_addr}:{port} "
                f"({'mutual TLS' if network.tls else 'NO TLS'}), "
                f"federation {plan.federation_id[:12]}, "
                f"{rounds} rounds, collaborators: {', '.join(collaborators)}"
            )
            log.info("listening on %s:%d", network.agg_addr, port)
            if plan.notifications.webhooks:
                console.print(f"Posting events to {len(plan.notifications.webhooks)} webhook(s)")
            aggregator.wait_until_finished(linger_s=plan.aggregator.linger_s)
            # End the event and metric streams cleanly before the server stops.
            event_stream.close()
            metric_stream.close()
    finally:
        aggregator.close()
        webhooks.close(drain_s=WEBHOOK_DRAIN_S)
    console.print(
        f"Federation finished in {time.monotonic() - started:.1f}s. "
        "Models: save/last.safetensors, save/best.safetensors; metrics: logs/metrics.jsonl"
    )


@app.command("status")
def status(
    workspace: Path | None = WorkspaceOption,
    name: str | None = typer.Option(
        None,
        "--name",
        "-n",
        help="Connect with this collaborator's certificate "
        "(default: the first in plan/cols.yaml whose key is in this workspace).",
    ),
    timeout: float = typer.Option(
        5.0, "--timeout", help="Give up after this many seconds without an answer."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """Show the running aggregator's round, who is connected and who has reported."""
    import json
    from dataclasses import asdict

    from fx.plan.loader import load_collaborator_names, load_plan
    from fx.transport.grpc.client import ClientSettings, GrpcAggregatorClient

    paths = workspace_paths(workspace)
    plan = load_plan(paths)
    names = load_collaborator_names(paths)
    identity = _status_identity(paths, names, name, tls=plan.network.tls)
    settings = ClientSettings.from_plan(
        plan, identity, connect_timeout_s=timeout, retry_max_backoff_s=1.0
    )
    if plan.network.tls:
        from fx.pki.workspace import require_collaborator_credentials

        tls: tuple[bytes, bytes, bytes] | None = require_collaborator_credentials(paths, identity)
    else:
        tls = None
    client = GrpcAggregatorClient(settings, tls=tls)
    try:
        state = client.status()
    finally:
        client.close()
    if as_json:
        console.print_json(json.dumps(asdict(state) | {"complete": list(state.complete)}))
        return
    _print_status(state, plan.network.target)


def _status_identity(
    paths: WorkspacePaths, names: list[str], name: str | None, *, tls: bool
) -> str:
    """Whose certificate `fx aggregator status` connects with."""
    if name is not None:
        if name not in names:
            raise PlanError(
                f"{paths.cols}: no collaborator named {name!r}",
                hint=f"use one of: {', '.join(names)}",
            )
        return name
    if not tls:
        return names[0]
    for candidate in names:
        if (
            paths.collaborator_key(candidate).is_file()
            and paths.collaborator_cert(candidate).is_file()
        ):
            return candidate
    raise PkiError(
        f"no collaborator certificate and key in {paths.client_dir} to connect with",
        hint="run this where a collaborator's credentials are (or `fx pki certify`), "
        "or pass --name NAME",
    )


def _print_status(state: FederationStatus, target: str) -> None:
    from rich.table import Table

    if state.done:
        where = "finished"
    elif state.final:
        where = f"final validation pass (after {state.rounds_to_train} rounds)"
    else:
        where = f"round {state.round + 1}/{state.rounds_to_train}"
    console.print(
        f"Federation [bold]{state.federation_id[:12]}[/] at {target}: {where}  "
        f"(training {state.training_uuid}, model {state.model_uuid})"
    )
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("collaborator")
    table.add_column("connected")
    table.add_column("last seen", justify="right")
    table.add_column("reported this round" if state.tasks else "reported")
    complete = set(state.complete)
    for collaborator in state.collaborators:
        seen = collaborator.last_seen_s
        reported = ", ".join(collaborator.reported) or "-"
        if collaborator.name in complete and state.tasks:
            reported = f"[green]{reported} (all)[/]"
        table.add_row(
            collaborator.name,
            "[green]yes[/]" if collaborator.connected else "[yellow]no[/]",
            "never" if seen is None else f"{seen:.0f}s ago",
            reported,
        )
    console.print(table)
    connected = sum(c.connected for c in state.collaborators)
    console.print(
        f"{connected}/{len(state.collaborators)} connected, "
        f"{len(complete)}/{len(state.collaborators)} reported every task "
        f"({', '.join(state.tasks) or 'none'}) of this round"
    )
