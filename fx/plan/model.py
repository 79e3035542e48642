"""The plan as typed, immutable values. Built only from validated YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TaskKind = Literal["train", "validate"]
Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class BestMetric:
    task: str
    name: str
    direction: Direction = "maximize"

    def is_better(self, candidate: float, incumbent: float | None) -> bool:
        if incumbent is None:
            return True
        return candidate > incumbent if self.direction == "maximize" else candidate < incumbent


@dataclass(frozen=True)
class AggregatorSettings:
    rounds_to_train: int
    aggregation: str = "fedavg"
    best_metric: BestMetric | None = None
    quorum: float = 0.5
    round_deadline_s: float = 3600.0
    liveness_timeout_s: float = 30.0
    linger_s: float = 10.0

    def quorum_count(self, n_collaborators: int) -> int:
        """How many collaborators must report before a round may close (at least 1)."""
        if self.quorum > 1:
            return max(1, min(n_collaborators, int(self.quorum)))
        return max(1, min(n_collaborators, round(self.quorum * n_collaborators + 1e-9)))


@dataclass(frozen=True)
class CollaboratorSettings:
    connect_timeout_s: float = 120.0
    retry_max_backoff_s: float = 5.0
    heartbeat_s: float = 5.0


@dataclass(frozen=True)
class NetworkSettings:
    agg_addr: str
    agg_port: int
    tls: bool = True
    keepalive_s: float = 30.0
    chunk_mib: float = 4.0

    @property
    def chunk_bytes(self) -> int:
        return int(self.chunk_mib * (1 << 20))

    @property
    def target(self) -> str:
        """host:port as gRPC wants it (IPv6 literals in brackets)."""
        host = f"[{self.agg_addr}]" if ":" in self.agg_addr else self.agg_addr
        return f"{host}:{self.agg_port}"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: TaskKind
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    runner: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookSettings:
    """A URL the aggregator POSTs lifecycle events to; the HMAC secret is given
    literally (``secret``) or by the name of an environment variable (``secret_env``)."""

    url: str
    secret: str | None = field(default=None, repr=False)
    secret_env: str | None = None


@dataclass(frozen=True)
class NotificationSettings:
    webhooks: tuple[WebhookSettings, ...] = ()


#: Top-level plan sections that only the aggregator uses. They are left out of the
#: federation id and of the plan the aggregator describes to collaborators (they
#: may hold webhook secrets), so the aggregator can change them alone.
AGGREGATOR_LOCAL_KEYS = frozenset({"notifications"})


def shared_document(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` without :data:`AGGREGATOR_LOCAL_KEYS`: the plan every party shares."""
    return {key: value for key, value in document.items() if key not in AGGREGATOR_LOCAL_KEYS}


@dataclass(frozen=True)
class Plan:
    template: str
    aggregator: AggregatorSettings
    collaborator: CollaboratorSettings
    network: NetworkSettings
    tasks: tuple[TaskSpec, ...]
    model: ModelSpec
    federation_id: str
    document: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)

    @property
    def shared_document(self) -> dict[str, Any]:
        """The plan as collaborators see it (no aggregator-local sections)."""
        return shared_document(self.document)

    def tasks_of_kind(self, kind: TaskKind) -> tuple[TaskSpec, ...]:
        return tuple(task for task in self.tasks if task.kind == kind)

    def round_tasks(self, *, final: bool) -> tuple[TaskSpec, ...]:
        """Tasks of one round: validate the incoming global model, then train it.

        The final pass (after the last training round) only validates, so the
        model the federation ends with has a measured score.
        """
        validate = self.tasks_of_kind("validate")
        return validate if final else validate + self.tasks_of_kind("train")
