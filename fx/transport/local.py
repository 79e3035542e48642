"""An in-process transport: a collaborator calls the Aggregator object directly.

Used by tests to run a whole federation in one process, with no sockets.
Tensors are copied on the way in and out, as they would be over the wire, so
neither side can mutate the other's arrays.
"""

from __future__ import annotations

import numpy as np

from fx.aggregator.core import Aggregator
from fx.transport.api import ExperimentDescription, SubmitAck, TaskAssignment, TaskReport


class LocalTransport:
    def __init__(self, aggregator: Aggregator, collaborator: str) -> None:
        self._aggregator = aggregator
        self._collaborator = collaborator

    def describe(self) -> ExperimentDescription:
        return self._aggregator.describe()

    def get_tasks(self, *, wait_s: float) -> TaskAssignment:
        return self._aggregator.get_tasks(self._collaborator, wait_s=wait_s)

    def get_model(self, round: int) -> dict[str, np.ndarray]:
        model = self._aggregator.global_model(round)
        return {name: array.copy() for name, array in model.tensors.items()}

    def send_results(self, report: TaskReport) -> SubmitAck:
        if report.tensors is not None:
            copied = {name: np.array(array, copy=True) for name, array in report.tensors.items()}
            report = TaskReport(
                report.round, report.task, report.sample_count, report.metrics, copied
            )
        return self._aggregator.submit(self._collaborator, report)

    def close(self) -> None:
        pass
