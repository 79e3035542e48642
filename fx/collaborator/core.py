"""The collaborator's task loop: ask for work, train/validate locally, report, repeat."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from fx.collaborator.events import RoundSignal
from fx.collaborator.runner import TaskRunner
from fx.plan.model import Plan
from fx.transport.api import AggregatorAPI, RoundClosedError, TaskAssignment, TaskReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskOutcome:
    round: int
    task: str
    metrics: dict[str, float]
    accepted: bool
    reason: str = ""


class Collaborator:
    """Drives a TaskRunner through the rounds the aggregator assigns."""

    def __init__(
        self,
        *,
        name: str,
        api: AggregatorAPI,
        runner: TaskRunner,
        plan: Plan,
        poll_wait_s: float = 30.0,
        on_task_done: Callable[[TaskOutcome], None] | None = None,
        round_signal: RoundSignal | None = None,
    ) -> None:
        self.name = name
        self._api = api
        self._runner = runner
        self._tasks = {task.name: task for task in plan.tasks}
        self._poll_wait_s = poll_wait_s
        self._on_task_done = on_task_done
        self._signal = round_signal
        self._seen_generation = 0

    def run(self) -> int:
        """Work until the aggregator says the federation is over; returns rounds worked."""
        rounds_worked = 0
        last_round = -1
        while True:
            assignment = self._next_assignment(after_round=last_round)
            last_round = assignment.round
            if assignment.done:
                log.info("%s: the federation is finished", self.name)
                return rounds_worked
            if not assignment.tasks:
                continue  # the long-poll ended before the next round opened
            try:
                self._run_round(assignment)
            except RoundClosedError as exc:
                log.warning(
                    "%s: round %d closed while working (%s)", self.name, assignment.round, exc
                )
                continue
            rounds_worked += 1

    def _next_assignment(self, *, after_round: int) -> TaskAssignment:
        """The next tasks. While the event stream is live, wait for its push (a round
        opened, or the federation ended) rather than hold a long-poll open; without
        it, long-poll GetTasks, which answers the moment a round opens."""
        signal = self._signal
        if signal is None:
            return self._api.get_tasks(wait_s=self._poll_wait_s)
        quiet = (
            signal.live
            and not signal.wait_for_work(
                after_round=after_round,
                after_generation=self._seen_generation,
                timeout=self._poll_wait_s,
            )
            and signal.live
        )
        # Announcements from now on are news to the next wait.
        self._seen_generation = signal.generation
        # A quiet stream (a long round, or a push we missed): check once, no long-poll.
        return self._api.get_tasks(wait_s=0.0 if quiet else self._poll_wait_s)

    def _run_round(self, assignment: TaskAssignment) -> None:
        self._runner.set_weights(self._api.get_model(assignment.round))
        for assigned in assignment.tasks:
            spec = self._tasks[assigned.name]
            # The round lets a runner seed its randomness per round, so a restarted
            # collaborator repeats a round's work exactly.
            settings = {**spec.settings, "round": assignment.round}
            if spec.kind == "train":
                result = self._runner.train(settings)
                tensors = self._runner.get_weights()
            else:
                result = self._runner.validate(settings)
                tensors = None
            ack = self._api.send_results(
                TaskReport(
                    round=assignment.round,
                    task=spec.name,
                    sample_count=result.sample_count,
                    metrics=dict(result.metrics),
                    tensors=tensors,
                )
            )
            if not ack.accepted:
                log.warning(
                    "%s: %s for round %d refused: %s",
                    self.name,
                    spec.name,
                    assignment.round,
                    ack.reason,
                )
            if self._on_task_done is not None:
                self._on_task_done(
                    TaskOutcome(
                        assignment.round, spec.name, dict(result.metrics), ack.accepted, ack.reason
                    )
                )
            if not ack.accepted:
                return
