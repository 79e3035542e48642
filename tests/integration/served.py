"""An aggregator served in-process over real gRPC and mutual TLS on 127.0.0.1, for RPC tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fx.aggregator.admission import Admission
from fx.aggregator.core import Aggregator
from fx.aggregator.store import ModelStore
from fx.algorithms.registry import resolve_aggregation
from fx.collaborator.runner import build_initial_weights
from fx.metrics import MetricRecord, MetricsLog
from fx.notify.bus import Broadcast
from fx.notify.events import Event
from fx.pki.crl import RevocationList
from fx.pki.workspace import (
    certify_workspace,
    require_aggregator_credentials,
    require_collaborator_credentials,
)
from fx.plan.loader import load_collaborator_names, load_plan
from fx.transport.grpc.client import ClientSettings, GrpcAggregatorClient
from fx.transport.grpc.credentials import server_credentials
from fx.transport.grpc.server import AggregatorServicer, run_server
from fx.workspace.create import NetworkChoice, create_workspace
from fx.workspace.paths import WorkspacePaths
from fx.workspace.templates import get_template
from tests.conftest import free_port

COLLABORATORS = ("site-1", "site-2")


def certified_workspace(root: Path, *, rounds: int = 2, port: int | None = None) -> WorkspacePaths:
    """A numpy-template workspace for site-1 and site-2, with its PKI."""
    paths = create_workspace(
        get_template("numpy_logreg_digits"),
        root,
        collaborators=list(COLLABORATORS),
        network=NetworkChoice("localhost", port or free_port()),
        rounds=rounds,
    )
    certify_workspace(paths, aggregator_hosts=["localhost"], collaborators=list(COLLABORATORS))
    return paths


@dataclass
class Served:
    paths: WorkspacePaths
    aggregator: Aggregator
    servicer: AggregatorServicer
    events: Broadcast[Event]
    metrics: Broadcast[MetricRecord]
    port: int
    chunk_bytes: int

    def client(
        self,
        name: str = "site-1",
        *,
        certificate_of: str | None = None,
        federation_id: str | None = None,
        port: int | None = None,
        connect_timeout_s: float = 10.0,
    ) -> GrpcAggregatorClient:
        """A collaborator's client; ``certificate_of`` presents another one's certificate."""
        settings = ClientSettings(
            target=f"127.0.0.1:{port or self.port}",
            name=name,
            federation_id=federation_id or self.aggregator.plan.federation_id,
            chunk_bytes=self.chunk_bytes,
            keepalive_s=30,
            connect_timeout_s=connect_timeout_s,
            retry_max_backoff_s=0.5,
        )
        tls = require_collaborator_credentials(self.paths, certificate_of or name)
        return GrpcAggregatorClient(settings, tls=tls)


@contextlib.contextmanager
def serve(
    paths: WorkspacePaths,
    *,
    model: Mapping[str, np.ndarray] | None = None,
    chunk_bytes: int = 64 << 10,
    aggregator_class: type[Aggregator] = Aggregator,
    server_tls: tuple[bytes, bytes, bytes] | None = None,
    **aggregator_options: Any,
) -> Iterator[Served]:
    """``server_tls`` (key, certificate, chain) replaces the aggregator's own credentials."""
    plan = load_plan(paths)
    collaborators = load_collaborator_names(paths)
    events: Broadcast[Event] = Broadcast()
    metrics: Broadcast[MetricRecord] = Broadcast()
    if model is None:
        model = build_initial_weights(paths.root, plan.model.runner, plan.model.settings)
    aggregator = aggregator_class(
        plan=plan,
        collaborators=collaborators,
        initial_model=model,
        aggregation=resolve_aggregation("fedavg"),
        store=ModelStore(paths.save),
        metrics=MetricsLog(paths.metrics, on_record=metrics.publish),
        events=events.publish,
        **aggregator_options,
    )
    servicer = AggregatorServicer(
        aggregator, chunk_bytes=chunk_bytes, events=events, metrics=metrics
    )
    admission = Admission(
        collaborators=collaborators,
        federation_id=plan.federation_id,
        is_revoked=RevocationList(paths.crl, chain=paths.cert_chain).is_revoked,  # as the CLI
    )
    try:
        with run_server(
            servicer,
            admission=admission,
            host="127.0.0.1",
            port=0,
            credentials=server_credentials(*(server_tls or require_aggregator_credentials(paths))),
            chunk_bytes=chunk_bytes,
            keepalive_s=30,
            max_workers=16,
        ) as port:
            yield Served(paths, aggregator, servicer, events, metrics, port, chunk_bytes)
            events.close()
            metrics.close()
    finally:
        aggregator.close()
