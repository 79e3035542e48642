"""The aggregator's round state machine. No sockets: it is driven through method calls.

A round: every collaborator runs the plan's validate tasks on the global model,
then its train tasks, and reports each result. Train results are folded into
the aggregation as they arrive. When every collaborator has reported (or the
deadline has passed with a quorum), the round closes: the aggregated
validation metrics score the global model of that round (and may make it the
best), the aggregation becomes the next global model, and the next round
opens. After the last training round a final validate-only round scores the
model the federation ends with.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fx.aggregator.checkpoint import CheckpointStore, ResumeState, RoundRecord
from fx.aggregator.store import ModelStore
from fx.algorithms.base import Aggregation
from fx.metrics import MetricsLog
from fx.plan.model import Plan, TaskSpec
from fx.tensors.checks import find_update_problems
from fx.transport.api import (
    AssignedTask,
    ExperimentDescription,
    RoundClosedError,
    SubmitAck,
    TaskAssignment,
    TaskReport,
)

log = logging.getLogger(__name__)

MetricKey = tuple[str, str]  # (task, metric name)


@dataclass(frozen=True)
class GlobalModel:
    """One version of the global model; ``version`` = number of rounds aggregated into it."""

    version: int
    uuid: str
    tensors: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class RoundSummary:
    round: int
    final: bool
    model_version: int
    reporters: tuple[str, ...]
    missing: tuple[str, ...]
    metrics: Mapping[MetricKey, float]
    duration_s: float
    new_best: bool


@dataclass
class _RoundState:
    number: int
    tasks: tuple[TaskSpec, ...]
    opened_at: float
    reported: dict[str, set[str]] = field(default_factory=dict)
    metric_sums: dict[MetricKey, list[float]] = field(default_factory=dict)

    def complete(self, collaborator: str) -> bool:
        return len(self.reported.get(collaborator, ())) == len(self.tasks)


class Aggregator:
    """Runs ``plan.aggregator.rounds_to_train`` rounds for the given collaborators."""

    def __init__(
        self,
        *,
        plan: Plan,
        collaborators: Sequence[str],
        initial_model: Mapping[str, np.ndarray],
        aggregation: Aggregation,
        store: ModelStore,
        metrics: MetricsLog | None = None,
        on_round_closed: Callable[[RoundSummary], None] | None = None,
        checkpoints: CheckpointStore | None = None,
        resume: ResumeState | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not collaborators:
            raise ValueError("a federation needs at least one collaborator")
        self.plan = plan
        self.collaborators = tuple(collaborators)
        self.training_uuid = resume.training_uuid if resume else str(uuid.uuid4())
        self._settings = plan.aggregator
        self._quorum = self._settings.quorum_count(len(self.collaborators))
        self._aggregation = aggregation
        self._store = store
        self._metrics = metrics
        self._on_round_closed = on_round_closed
        self._clock = clock
        self._checkpoints = checkpoints
        self._cond = threading.Condition()
        if resume is None:
            self._model = GlobalModel(0, str(uuid.uuid4()), dict(initial_model))
            first_round, self._best_value, self._done = 0, None, False
        else:
            self._model = GlobalModel(resume.model_version, resume.model_uuid, dict(initial_model))
            first_round, self._best_value = resume.next_round, resume.best_value
            self._done = resume.finished
        self._aggregation.reset(self._model.tensors)
        self._told_done: set[str] = set()
        self._last_seen: dict[str, float] = {}
        self._round = self._open_round(first_round)
        self._closed = False
        self._watchdog = threading.Thread(target=self._watch, name="fx-round-watchdog", daemon=True)
        self._watchdog.start()

    # -- queries -----------------------------------------------------------

    @property
    def done(self) -> bool:
        with self._cond:
            return self._done

    @property
    def round(self) -> int:
        with self._cond:
            return self._round.number

    def global_model(self, round: int | None = None) -> GlobalModel:
        """The global model of ``round`` (default: current); only the current one is served."""
        with self._cond:
            if round is not None and round != self._round.number:
                raise RoundClosedError(
                    f"round {round} is not open; the current round is {self._round.number}"
                )
            return self._model

    def describe(self) -> ExperimentDescription:
        with self._cond:
            return ExperimentDescription(
                federation_id=self.plan.federation_id,
                training_uuid=self.training_uuid,
                plan=self.plan.document,
                round=self._round.number,
                rounds_to_train=self._settings.rounds_to_train,
                collaborators=self.collaborators,
                done=self._done,
            )

    def reported(self) -> dict[str, list[str]]:
        """Who has reported which tasks in the current round."""
        with self._cond:
            return {name: sorted(tasks) for name, tasks in self._round.reported.items()}

    # -- collaborator calls ------------------------------------------------

    def get_tasks(self, collaborator: str, *, wait_s: float = 0.0) -> TaskAssignment:
        """The tasks ``collaborator`` has not done in the current round.

        When it has none, waits up to ``wait_s`` for the next round to open
        (a long-poll: the answer comes the moment the round opens).
        """
        self._require_member(collaborator)
        give_up_at = self._clock() + wait_s
        with self._cond:
            while True:
                if self._done:
                    self._told_done.add(collaborator)
                    self._cond.notify_all()
                    return TaskAssignment(round=self._round.number, done=True)
                done_tasks = self._round.reported.get(collaborator, set())
                pending = tuple(
                    AssignedTask(task.name, task.kind)
                    for task in self._round.tasks
                    if task.name not in done_tasks
                )
                if pending:
                    return TaskAssignment(self._round.number, pending, self._model.uuid)
                remaining = give_up_at - self._clock()
                if remaining <= 0:
                    return TaskAssignment(self._round.number, (), self._model.uuid)
                self._cond.wait(remaining)

    def submit(self, collaborator: str, report: TaskReport) -> SubmitAck:
        """Accept one task result, or refuse it with a reason (the round goes on either way)."""
        self._require_member(collaborator)
        with self._cond:
            refusal = self._refusal(collaborator, report)
            if refusal is not None:
                if refusal.duplicate:
                    log.info(
                        "%s: duplicate %s for round %d ignored",
                        collaborator,
                        report.task,
                        report.round,
                    )
                else:
                    log.warning(
                        "rejected %s from %s: %s", report.task, collaborator, refusal.reason
                    )
                return refusal
            self._apply(collaborator, report)
            if self._may_close():
                self._close_round()
            return SubmitAck(accepted=True)

    def mark_alive(self, collaborator: str) -> None:
        """Record a sign of life (any call or a heartbeat) from ``collaborator``."""
        with self._cond:
            self._last_seen[collaborator] = self._clock()

    def _presumed_dead(self, collaborator: str) -> bool:
        """Silent for longer than liveness_timeout_s after having been seen.

        One that was never seen in this process is not presumed dead: it may
        still be starting, and only the round deadline stops us waiting for it.
        A slow trainer keeps its heartbeat going, so it is never presumed dead.
        """
        seen = self._last_seen.get(collaborator)
        return seen is not None and self._clock() - seen > self._settings.liveness_timeout_s

    def liveness(self) -> dict[str, float | None]:
        """Seconds since each collaborator was last heard from (None: never)."""
        with self._cond:
            now = self._clock()
            return {
                name: (now - self._last_seen[name]) if name in self._last_seen else None
                for name in self.collaborators
            }

    # -- lifecycle -----------------------------------------------------------

    def wait_until_finished(self, *, linger_s: float, timeout: float | None = None) -> bool:
        """Block until the federation is done and every collaborator has been told so
        (or ``linger_s`` has passed since it finished). False on ``timeout``."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._done:
                if deadline is not None and self._clock() >= deadline:
                    return False
                self._cond.wait(None if deadline is None else deadline - self._clock())
            linger_until = self._clock() + linger_s
            while set(self.collaborators) - self._told_done:
                remaining = linger_until - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- internals ---------------------------------------------------------------

    def _require_member(self, collaborator: str) -> None:
        if collaborator not in self.collaborators:
            raise PermissionError(f"{collaborator!r} is not a collaborator of this federation")
        self.mark_alive(collaborator)

    def _open_round(self, number: int) -> _RoundState:
        final = number >= self._settings.rounds_to_train
        return _RoundState(number, self.plan.round_tasks(final=final), self._clock())

    def _refusal(self, collaborator: str, report: TaskReport) -> SubmitAck | None:
        if self._done or report.round != self._round.number:
            return SubmitAck(
                False, f"round {report.round} is closed; the current round is {self._round.number}"
            )
        task = next((t for t in self._round.tasks if t.name == report.task), None)
        if task is None:
            return SubmitAck(False, f"task {report.task!r} is not assigned in round {report.round}")
        if report.task in self._round.reported.get(collaborator, set()):
            return SubmitAck(True, "already received", duplicate=True)
        if report.sample_count <= 0:
            return SubmitAck(False, f"sample_count must be positive, got {report.sample_count}")
        bad_metrics = [name for name, value in report.metrics.items() if not math.isfinite(value)]
        if bad_metrics:
            return SubmitAck(False, f"metrics are not finite: {', '.join(sorted(bad_metrics))}")
        if task.kind == "train":
            if report.tensors is None:
                return SubmitAck(False, f"train task {report.task!r} sent no weights")
            problems = find_update_problems(self._model.tensors, report.tensors)
            if problems:
                more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
                return SubmitAck(False, "; ".join(problems[:3]) + more)
        return None

    def _apply(self, collaborator: str, report: TaskReport) -> None:
        task = next(t for t in self._round.tasks if t.name == report.task)
        if task.kind == "train":
            assert report.tensors is not None
            self._aggregation.add(report.tensors, float(report.sample_count))
        else:
            for name, value in report.metrics.items():
                sums = self._round.metric_sums.setdefault((task.name, name), [0.0, 0.0])
                sums[0] += value * report.sample_count
                sums[1] += report.sample_count
        if self._metrics is not None:
            for name, value in report.metrics.items():
                self._metrics.record(
                    round=report.round, source=collaborator, task=task.name, name=name, value=value
                )
        self._round.reported.setdefault(collaborator, set()).add(task.name)

    def _may_close(self) -> bool:
        """All have reported; or a quorum has and the rest are dead or past the deadline."""
        pending = [name for name in self.collaborators if not self._round.complete(name)]
        if not pending:
            return True
        if len(self.collaborators) - len(pending) < self._quorum:
            return False
        if all(self._presumed_dead(name) for name in pending):
            return True
        return self._clock() - self._round.opened_at >= self._settings.round_deadline_s

    def _watch(self) -> None:
        """Close a round whose stragglers died or ran out of time.

        Healthy rounds close the moment the last result arrives (in submit);
        this only catches the unhealthy ones, so a coarse tick is enough.
        """
        tick = max(0.05, min(1.0, self._settings.liveness_timeout_s / 4))
        with self._cond:
            while not self._closed and not self._done:
                self._cond.wait(tick)
                if not self._closed and not self._done and self._may_close():
                    pending = [n for n in self.collaborators if not self._round.complete(n)]
                    overdue = (
                        self._clock() - self._round.opened_at >= self._settings.round_deadline_s
                    )
                    log.warning(
                        "round %d closing without %s (%s)",
                        self._round.number,
                        ", ".join(pending),
                        "deadline passed" if overdue else "no sign of life",
                    )
                    self._close_round()

    def _close_round(self) -> None:
        state = self._round
        final = state.number >= self._settings.rounds_to_train
        metrics = {
            key: total / weight for key, (total, weight) in state.metric_sums.items() if weight
        }
        for (task, name), value in metrics.items():
            if self._metrics is not None:
                self._metrics.record(
                    round=state.number, source="aggregator", task=task, name=name, value=value
                )
        new_best = self._maybe_save_best(metrics)
        if not final:
            tensors = (
                self._aggregation.result() if self._aggregation.count else dict(self._model.tensors)
            )
            self._model = GlobalModel(self._model.version + 1, str(uuid.uuid4()), tensors)
            self._store.save_last(tensors, version=self._model.version, model_uuid=self._model.uuid)
            self._aggregation.reset(tensors)
        summary = RoundSummary(
            round=state.number,
            final=final,
            model_version=state.number,
            reporters=tuple(n for n in self.collaborators if state.complete(n)),
            missing=tuple(n for n in self.collaborators if not state.complete(n)),
            metrics=metrics,
            duration_s=self._clock() - state.opened_at,
            new_best=new_best,
        )
        if final:
            self._done = True
        else:
            self._round = self._open_round(state.number + 1)
            if not self._round.tasks:  # a plan without validate tasks has no final pass
                self._done = True
        self._save_checkpoint(summary)
        self._cond.notify_all()
        if self._on_round_closed is not None:
            self._on_round_closed(summary)

    def _save_checkpoint(self, summary: RoundSummary) -> None:
        if self._checkpoints is None:
            return
        self._checkpoints.save(
            ResumeState(
                federation_id=self.plan.federation_id,
                training_uuid=self.training_uuid,
                next_round=summary.round + 1,
                model_version=self._model.version,
                model_uuid=self._model.uuid,
                best_value=self._best_value,
                finished=self._done,
            ),
            self._model.tensors,
            RoundRecord(
                round=summary.round,
                reporters=summary.reporters,
                missing=summary.missing,
                metrics={
                    f"{task}/{name}": value for (task, name), value in summary.metrics.items()
                },
            ),
        )

    def _maybe_save_best(self, metrics: Mapping[MetricKey, float]) -> bool:
        best = self._settings.best_metric
        if best is None or (best.task, best.name) not in metrics:
            return False
        value = metrics[(best.task, best.name)]
        if not best.is_better(value, self._best_value):
            return False
        self._best_value = value
        self._store.save_best(
            self._model.tensors,
            version=self._model.version,
            model_uuid=self._model.uuid,
            metric=f"{best.task}/{best.name}",
            value=value,
        )
        return True
