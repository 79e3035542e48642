"""The contract the collaborator and the aggregator meet through.

The collaborator core talks only to an :class:`AggregatorAPI`; whether that is
the gRPC client (fx/transport/grpc/client.py) or the in-process
:class:`~fx.transport.local.LocalTransport` is the caller's choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fx.plan.model import TaskKind


class RoundClosedError(LookupError):
    """A request named a round that is no longer (or not yet) open."""


@dataclass(frozen=True)
class AssignedTask:
    name: str
    kind: TaskKind


@dataclass(frozen=True)
class TaskAssignment:
    """What a collaborator should do now.

    ``done``: the federation is over, exit. No tasks and not done: nothing to
    do yet (a long-poll that timed out); ask again.
    """

    round: int
    tasks: tuple[AssignedTask, ...] = ()
    model_uuid: str = ""
    done: bool = False


@dataclass(frozen=True)
class TaskReport:
    """One finished task: metrics, and the trained weights for a train task."""

    round: int
    task: str
    sample_count: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    tensors: Mapping[str, np.ndarray] | None = None


@dataclass(frozen=True)
class SubmitAck:
    accepted: bool
    reason: str = ""
    duplicate: bool = False


@dataclass(frozen=True)
class ExperimentDescription:
    federation_id: str
    training_uuid: str
    plan: dict[str, Any]
    round: int
    rounds_to_train: int
    collaborators: tuple[str, ...]
    done: bool


@dataclass(frozen=True)
class CollaboratorStatus:
    name: str
    connected: bool  # heard from within the aggregator's liveness timeout
    last_seen_s: float | None  # seconds since its last call or heartbeat; None: never
    reported: tuple[str, ...]  # tasks it has reported in the current round


@dataclass(frozen=True)
class FederationStatus:
    """Where the federation stands, for `fx aggregator status` and dashboards."""

    federation_id: str
    training_uuid: str
    round: int
    rounds_to_train: int
    final: bool  # the current round is the final validate-only pass
    done: bool
    model_uuid: str
    tasks: tuple[str, ...]  # the current round's tasks
    collaborators: tuple[CollaboratorStatus, ...]

    @property
    def complete(self) -> tuple[str, ...]:
        """Collaborators that have reported every task of the current round."""
        return tuple(c.name for c in self.collaborators if set(self.tasks) <= set(c.reported))


class AggregatorAPI(Protocol):
    """The aggregator as one collaborator sees it (its identity is bound in)."""

    def describe(self) -> ExperimentDescription: ...

    def get_tasks(self, *, wait_s: float) -> TaskAssignment: ...

    def get_model(self, round: int) -> dict[str, np.ndarray]: ...

    def send_results(self, report: TaskReport) -> SubmitAck: ...

    def close(self) -> None: ...
