"""`fx aggregator start`: serve the plan over gRPC until the federation is done."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer

from fx.cli.console import console, setup_logging, warn_loudly
from fx.cli.options import WorkspaceOption, workspace_paths
from fx.errors import PlanError, WorkspaceError

app = typer.Typer(no_args_is_help=True)
log = logging.getLogger("fx.aggregator")


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
    from fx.metrics import MetricsLog
    from fx.pki.crl import RevocationList
    from fx.pki.workspace import require_aggregator_credentials
    from fx.plan.loader import load_collaborator_names, load_plan
    from fx.tensors.safetensors_io import load_tensors, save_tensors
    from fx.transport.grpc.credentials import server_credentials
    from fx.transport.grpc.server import AggregatorServicer, run_server

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
        initial = checkpoints.load_model()
        console.print(
            f"Resuming from checkpoint: round {resume.next_round + 1}, "
            f"model v{resume.model_version}, training {resume.training_uuid}"
        )
    elif paths.init_model.exists():
        initial = load_tensors(paths.init_model)
    else:
        initial = build_initial_weights(paths.root, plan.model.runner, plan.model.settings)
        save_tensors(paths.init_model, initial)

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

    aggregator = Aggregator(
        plan=plan,
        collaborators=collaborators,
        initial_model=initial,
        aggregation=load_aggregation(plan.aggregator.aggregation, paths.root),
        store=ModelStore(paths.save),
        metrics=MetricsLog(paths.metrics),
        on_round_closed=report,
        checkpoints=checkpoints,
        resume=resume,
    )
    admission = Admission(
        collaborators=collaborators,
        federation_id=plan.federation_id,
        is_revoked=RevocationList(paths.crl).is_revoked,
        tls=network.tls,
    )
    servicer = AggregatorServicer(aggregator, chunk_bytes=network.chunk_bytes)
    try:
        with run_server(
            servicer,
            admission=admission,
            host=network.agg_addr,
            port=network.agg_port,
            credentials=credentials,
            chunk_bytes=network.chunk_bytes,
            keepalive_s=network.keepalive_s,
            max_workers=max(16, 4 * len(collaborators) + 8),
        ) as port:
            console.print(
                f"Aggregator listening on {network.agg_addr}:{port} "
                f"({'mutual TLS' if network.tls else 'NO TLS'}), "
                f"federation {plan.federation_id[:12]}, "
                f"{rounds} rounds, collaborators: {', '.join(collaborators)}"
            )
            log.info("listening on %s:%d", network.agg_addr, port)
            aggregator.wait_until_finished(linger_s=plan.aggregator.linger_s)
    finally:
        aggregator.close()
    console.print(
        f"Federation finished in {time.monotonic() - started:.1f}s. "
        "Models: save/last.safetensors, save/best.safetensors; metrics: logs/metrics.jsonl"
    )
