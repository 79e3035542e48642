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

import functools
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from fx.aggregator.checkpoint import CheckpointStore, ResumeState, RoundRecord
from fx.aggregator.persist import Persister
from fx.aggregator.store import ModelStore
from fx.algorithms.base import Aggregation, FoldedUpdate
from fx.metrics import MetricsLog
from fx.notify import events as ev
from fx.plan.model import Plan, TaskSpec
from fx.tensors.checks import find_update_problems
from fx.tensors.codec import Chunk
from fx.tensors.safetensors_io import WrittenFile, map_tensors
from fx.tensors.staging import StagedUpdate
from fx.transport.api import (
    AssignedTask,
    CollaboratorStatus,
    ExperimentDescription,
    FederationStatus,
    RoundClosedError,
    SubmitAck,
    TaskAssignment,
    TaskReport,
)

log = logging.getLogger(__name__)

MetricKey = tuple[str, str]  # (task, metric name)

# How long the first update of a round may wait for the last model to be written to
# its file (see Aggregator._await_model_file): past this, it is folded into new memory.
MODEL_FILE_WAIT_S = 5.0


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
class _ClosedRound:
    """What the persister needs to save a closed round; it drops each model once saved."""

    summary: RoundSummary
    model: GlobalModel | None
    best: tuple[GlobalModel, str, float] | None
    resume: ResumeState


class UpdateReceiver(Protocol):
    """Receives one upload's chunks (UpdateStager, or a first update folded on arrival)."""

    def feed(self, chunk: Chunk) -> None: ...

    def finish(self) -> Mapping[str, np.ndarray]: ...

    def discard(self) -> None: ...


class _FirstUpdate:
    """The aggregation's receiver of a round's first update, which tells the aggregator
    when it is discarded (updates waiting to be added may then go on)."""

    def __init__(self, aggregator: Aggregator, receiver: UpdateReceiver) -> None:
        self._aggregator = aggregator
        self._receiver = receiver

    def feed(self, chunk: Chunk) -> None:
        self._receiver.feed(chunk)

    def finish(self) -> Mapping[str, np.ndarray]:
        return self._receiver.finish()

    def discard(self) -> None:
        self._receiver.discard()
        self._aggregator._first_update_ended(self)


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
        events: ev.EventSink | None = None,
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
        self._events = events
        self._pending_events: list[ev.Event] = []
        self._emit_lock = threading.Lock()
        if resume is None:  # a resumed federation announces only the round it resumes at
            self._queue_event(ev.training_start(self.training_uuid, model_uuid=self._model.uuid))
        self._queue_round_start()
        self._flush_events()
        self._persister = Persister(self._cond)
        # The uuid of the global model while its arrays are being written to its file.
        self._awaiting_file: str | None = None
        # The receiver folding the round's first update in as it arrives (receive_first_update).
        self._first_update: UpdateReceiver | None = None
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
                plan=self.plan.shared_document,
                round=self._round.number,
                rounds_to_train=self._settings.rounds_to_train,
                collaborators=self.collaborators,
                done=self._done,
            )

    def reported(self) -> dict[str, list[str]]:
        """Who has reported which tasks in the current round."""
        with self._cond:
            return {name: sorted(tasks) for name, tasks in self._round.reported.items()}

    def status(self) -> FederationStatus:
        """One consistent snapshot: the round, who is connected, who has reported."""
        with self._cond:
            now, timeout = self._clock(), self._settings.liveness_timeout_s
            collaborators = []
            for name in self.collaborators:
                seen = self._last_seen.get(name)
                ago = None if seen is None else now - seen
                collaborators.append(
                    CollaboratorStatus(
                        name=name,
                        connected=ago is not None and ago <= timeout,
                        last_seen_s=ago,
                        reported=tuple(sorted(self._round.reported.get(name, ()))),
                    )
                )
            return FederationStatus(
                federation_id=self.plan.federation_id,
                training_uuid=self.training_uuid,
                round=self._round.number,
                rounds_to_train=self._settings.rounds_to_train,
                final=self._round.number >= self._settings.rounds_to_train,
                done=self._done,
                model_uuid=self._model.uuid,
                tasks=tuple(task.name for task in self._round.tasks),
                collaborators=tuple(collaborators),
            )

    def best_model(self) -> GlobalModel | None:
        """The best global model of this training so far, read back from the store
        (None until a round has been scored by the plan's best_metric)."""
        with self._cond:
            if self._best_value is None:
                return None
            self._wait_persisted()
        stored = self._store.load_best()
        return None if stored is None else GlobalModel(*stored)

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
                    self._wait_persisted()  # "done" promises the final files are on disk
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
            if report.tensors is not None and not isinstance(report.tensors, FoldedUpdate):
                self._await_first_update()
                if not self._aggregation.count:
                    self._await_model_file(report.round)
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
            self._wait_persisted(at_most=1)  # backpressure if the disk falls behind the rounds
        self._flush_events()
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
            self._wait_persisted()
            if self._persister.error is not None:
                raise self._persister.error
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._persister.close()

    # -- internals ---------------------------------------------------------------

    def _require_member(self, collaborator: str) -> None:
        if collaborator not in self.collaborators:
            raise PermissionError(f"{collaborator!r} is not a collaborator of this federation")
        self.mark_alive(collaborator)

    def _open_round(self, number: int) -> _RoundState:
        final = number >= self._settings.rounds_to_train
        log.info("round %d open (model v%d)", number, self._model.version)
        return _RoundState(number, self.plan.round_tasks(final=final), self._clock())

    def _wait_persisted(self, at_most: int = 0) -> None:
        """Wait (holding the lock) until at most ``at_most`` closed rounds are still being saved."""
        while self._persister.pending > at_most:
            self._cond.wait()

    def screen(self, collaborator: str, round: int, task: str) -> SubmitAck | None:
        """What submit would answer from the header alone: a closed round, a task not
        assigned, a duplicate. Lets the transport refuse before receiving any weights."""
        self._require_member(collaborator)
        with self._cond:
            return self._header_refusal(collaborator, round, task)

    def receive_first_update(
        self, collaborator: str, round: int, task: str, sample_count: int
    ) -> UpdateReceiver | None:
        """A receiver folding ``collaborator``'s update into the aggregation as it arrives,
        if it can be the round's first (see fx/algorithms/fold_on_arrival.py), else None:
        receive it some other way (staged) and submit it as usual. Its ``finish()`` is the
        report's tensors; ``discard()`` it once submitted, or when receiving fails.

        Only when at most one other collaborator still owes this update: the others'
        updates must wait for it to be complete before they are folded in, so a slow
        first upload would leave them all to be folded after its last byte. With one
        other at most, that is never more than folding the slow one last would be.
        """
        self._require_member(collaborator)
        receive_first = getattr(self._aggregation, "receive_first", None)
        with self._cond:
            still_owed = [
                name
                for name in self.collaborators
                if name != collaborator and task not in self._round.reported.get(name, set())
            ]
            if (
                receive_first is None
                or len(still_owed) > 1
                or self._header_refusal(collaborator, round, task) is not None
                or not any(t.name == task and t.kind == "train" for t in self._round.tasks)
                or self._aggregation.count
                or self._first_update is not None
            ):
                return None
            self._await_model_file(round)
            if self._aggregation.count or self._first_update is not None:
                return None  # another update came first while we waited
            receiver = receive_first(float(sample_count))
            if receiver is None:
                return None
            log.debug("folding %s's %s in as it arrives", collaborator, task)
            self._first_update = _FirstUpdate(self, receiver)
            return self._first_update

    def _first_update_ended(self, receiver: UpdateReceiver) -> None:
        with self._cond:
            if self._first_update is receiver:
                self._first_update = None
                self._cond.notify_all()

    def _await_first_update(self) -> None:
        """While the round's first update is folded in as it arrives, no other may be
        added: wait for it to be submitted, refused or broken off (or the round to close)."""
        while self._first_update is not None:
            self._cond.wait()

    def _header_refusal(self, collaborator: str, round: int, task: str) -> SubmitAck | None:
        if self._done or round != self._round.number:
            return SubmitAck(
                False, f"round {round} is closed; the current round is {self._round.number}"
            )
        if not any(t.name == task for t in self._round.tasks):
            return SubmitAck(False, f"task {task!r} is not assigned in round {round}")
        if task in self._round.reported.get(collaborator, set()):
            return SubmitAck(True, "already received", duplicate=True)
        return None

    def _refusal(self, collaborator: str, report: TaskReport) -> SubmitAck | None:
        refusal = self._header_refusal(collaborator, report.round, report.task)
        if refusal is not None:
            return refusal
        task = next(t for t in self._round.tasks if t.name == report.task)
        if report.sample_count <= 0:
            return SubmitAck(False, f"sample_count must be positive, got {report.sample_count}")
        bad_metrics = [name for name, value in report.metrics.items() if not math.isfinite(value)]
        if bad_metrics:
            return SubmitAck(False, f"metrics are not finite: {', '.join(sorted(bad_metrics))}")
        if task.kind == "train":
            if report.tensors is None:
                return SubmitAck(False, f"train task {report.task!r} sent no weights")
            if isinstance(report.tensors, FoldedUpdate):
                return None  # checked, all of it, as it arrived
            # A staged upload had its values checked as it arrived: do not read it twice.
            checked = isinstance(report.tensors, StagedUpdate) and report.tensors.checked_finite
            problems = find_update_problems(
                self._model.tensors, report.tensors, check_finite=not checked
            )
            if problems:
                more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
                return SubmitAck(False, "; ".join(problems[:3]) + more)
        return None

    def _apply(self, collaborator: str, report: TaskReport) -> None:
        task = next(t for t in self._round.tasks if t.name == report.task)
        if task.kind == "train":
            assert report.tensors is not None
            self._aggregation.add(report.tensors, float(report.sample_count))
            if isinstance(report.tensors, FoldedUpdate):
                self._first_update = None  # committed: other updates may be added now
                self._cond.notify_all()
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
                    self._cond.release()  # deliver its events outside the lock
                    try:
                        self._flush_events()
                    finally:
                        self._cond.acquire()

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
        scored = self._model
        best = self._new_best(metrics)
        if not final:
            tensors = self._aggregated()
            self._model = GlobalModel(self._model.version + 1, str(uuid.uuid4()), tensors)
            self._aggregation.reset(tensors)
        self._first_update = None  # one still arriving belongs to the closed round: refused
        summary = RoundSummary(
            round=state.number,
            final=final,
            model_version=state.number,
            reporters=tuple(n for n in self.collaborators if state.complete(n)),
            missing=tuple(n for n in self.collaborators if not state.complete(n)),
            metrics=metrics,
            duration_s=self._clock() - state.opened_at,
            new_best=best is not None,
        )
        if final:
            self._done = True
        else:
            self._round = self._open_round(state.number + 1)
            if not self._round.tasks:  # a plan without validate tasks has no final pass
                self._done = True
        # The next round is open before anything is written: the files follow, in order,
        # on the persister's thread (collaborators download meanwhile).
        if not final:
            self._awaiting_file = self._model.uuid
        self._persister.submit(
            functools.partial(
                self._save_round,
                _ClosedRound(
                    summary,
                    model=self._model,
                    best=None if best is None else (scored, *best),
                    resume=self._resume_state(summary),
                ),
            )
        )
        self._queue_round_start()
        self._cond.notify_all()

    def _aggregated(self) -> dict[str, np.ndarray]:
        """The round's aggregate; the current model again if no update was accepted."""
        if not self._aggregation.count:
            return dict(self._model.tensors)
        # An aggregation may build its result in its own accumulator (FedAvg does):
        # closing a round then allocates no second model.
        take_result = getattr(self._aggregation, "take_result", None)
        if take_result is None:
            return self._aggregation.result()
        tensors: dict[str, np.ndarray] = take_result()
        return tensors

    def _queue_round_start(self) -> None:
        """Queue the event announcing the round now open, or TRAINING_FINISHED."""
        if self._done:
            self._queue_event(ev.training_finished(self.training_uuid, model_uuid=self._model.uuid))
            return
        final = self._round.number >= self._settings.rounds_to_train
        announce = ev.model_test_round if final else ev.update_round_start
        self._queue_event(
            announce(self.training_uuid, round=self._round.number, model_uuid=self._model.uuid)
        )

    def _queue_event(self, event: ev.Event) -> None:
        """Called under the lock; :meth:`_flush_events` delivers it once the lock is released."""
        if self._events is not None:
            self._pending_events.append(event)

    def _flush_events(self) -> None:
        """Hand queued events to the sink, in order, outside the round lock (so a sink
        may call back into the aggregator); a sink that raises never breaks a round."""
        if self._events is None:
            return
        # Taking the batch inside the emit lock keeps the global order even when two
        # threads flush at once: a later batch is always delivered after an earlier one.
        with self._emit_lock:
            with self._cond:
                batch, self._pending_events = self._pending_events, []
            for event in batch:
                try:
                    self._events(event)
                except Exception:
                    log.exception("event sink failed on %s", event.notification_type)

    def _resume_state(self, summary: RoundSummary) -> ResumeState:
        return ResumeState(
            federation_id=self.plan.federation_id,
            training_uuid=self.training_uuid,
            next_round=summary.round + 1,
            model_version=self._model.version,
            model_uuid=self._model.uuid,
            best_value=self._best_value,
            finished=self._done,
        )

    def _save_round(self, closed: _ClosedRound) -> None:
        """Write what a closed round leaves behind (on the persister's thread, no lock held):
        the last model (unless final), the best one, then the checkpoint, then tell
        ``on_round_closed``. ``closed`` is emptied as it goes, so that the job lets go
        of the in-memory model as soon as it is on file (see _write_last)."""
        summary, resume = closed.summary, closed.resume
        model, closed.model = closed.model, None
        assert model is not None
        if not summary.final:
            model_uuid = model.uuid
            try:
                written = self._write_last(model)
            finally:
                # From here on the round's model is read from its file, if at all: only
                # now may a waiting update take its memory (see _await_model_file).
                model = None
                with self._cond:
                    if self._awaiting_file == model_uuid:
                        self._awaiting_file = None
                    self._cond.notify_all()
            written.commit()
            model_copy: Path | None = self._store.last_path
            tensors: Mapping[str, np.ndarray] | None = None
        else:
            model_copy, tensors = None, model.tensors
        if closed.best is not None:
            (scored, metric, value), closed.best = closed.best, None
            self._store.save_best(
                scored.tensors,
                version=scored.version,
                model_uuid=scored.uuid,
                metric=metric,
                value=value,
            )
            del scored
        if self._checkpoints is not None:
            self._checkpoints.save(
                resume,
                tensors,
                model_copy=model_copy,
                record=RoundRecord(
                    round=summary.round,
                    reporters=summary.reporters,
                    missing=summary.missing,
                    metrics={
                        f"{task}/{name}": value for (task, name), value in summary.metrics.items()
                    },
                ),
            )
        del tensors
        if self._on_round_closed is not None:
            self._on_round_closed(summary)

    def _write_last(self, model: GlobalModel) -> WrittenFile:
        """Write save/last.safetensors (not yet committed) and serve ``model`` from it.

        ``model``'s arrays are the aggregation's accumulator of the round that
        made it; FedAvg takes them back as the next round's accumulator once
        nothing else holds them. The download stream (encoded once) lets go when
        it is complete, and the aggregator as soon as the file is written (before
        its fsync): it then holds the model as a read-only map of the file, which
        nothing on a round's path reads but to encode a download (once, released
        as it goes). So the aggregator keeps one model in memory, not two.
        """
        written = self._store.write_last(
            model.tensors, version=model.version, model_uuid=model.uuid
        )
        try:
            mapped = map_tensors(written.temporary)
        except BaseException:
            written.discard()
            raise
        with self._cond:
            if self._model is model:
                self._model = GlobalModel(model.version, model.uuid, mapped)
        return written

    def _await_model_file(self, round: int) -> None:
        """Before the round's first update is folded in, give the last model a moment
        (bounded) to reach its file, so that its memory can be the accumulator.

        Called with the lock held; only waits for the write, which takes tens of
        milliseconds at 100 MB, and only when an update beats it (a collaborator
        that downloads and trains faster than the aggregator writes).
        """
        if not hasattr(self._aggregation, "take_result"):  # reuses no memory anyway
            return
        started = time.monotonic()
        deadline = started + MODEL_FILE_WAIT_S
        while self._awaiting_file is not None and self._awaiting_file == self._model.uuid:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "the first update of round %d did not wait any longer for model v%d "
                    "to be written: the disk is slow; it is folded into new memory",
                    round,
                    self._model.version,
                )
                return
            self._cond.wait(remaining)
        waited = time.monotonic() - started
        if waited >= 0.001:
            log.info(
                "the first update of round %d waited %.0f ms for model v%d to be written",
                round,
                waited * 1000,
                self._model.version,
            )

    def _new_best(self, metrics: Mapping[MetricKey, float]) -> tuple[str, float] | None:
        """(metric, value) if ``metrics`` make the scored model the best so far (recorded)."""
        best = self._settings.best_metric
        if best is None or (best.task, best.name) not in metrics:
            return None
        value = metrics[(best.task, best.name)]
        if not best.is_better(value, self._best_value):
            return None
        self._best_value = value
        return f"{best.task}/{best.name}", value
