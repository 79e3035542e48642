"""The TaskRunner protocol a template implements, and how fx loads one from src/."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fx.errors import PlanError, TaskError


@dataclass(frozen=True)
class TaskResult:
    """The outcome of one task: how many samples it saw and the metrics it measured."""

    sample_count: int
    metrics: dict[str, float] = field(default_factory=dict)


class TaskRunner(Protocol):
    """A template's model + data code, as the collaborator drives it.

    Constructed as ``Runner(data_dir=..., settings=..., collaborator=...)``.
    A runner class may also define ``initial_weights(settings)`` as a
    classmethod so the aggregator can build the first global model without data.
    """

    def get_weights(self) -> dict[str, np.ndarray]: ...

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None: ...

    def train(self, settings: Mapping[str, Any]) -> TaskResult: ...

    def validate(self, settings: Mapping[str, Any]) -> TaskResult: ...


def import_from_workspace(workspace: Path, reference: str, *, field_name: str) -> Any:
    """Resolve ``module:Attribute`` with the workspace root first on sys.path."""
    module_name, _, attribute = reference.partition(":")
    root = str(workspace)
    _forget_other_workspace(workspace, module_name.partition(".")[0])
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise PlanError(
            f"plan/plan.yaml: {field_name}: cannot import module {module_name!r} ({exc})",
            hint=f"check that {workspace / (module_name.replace('.', '/') + '.py')} exists",
        ) from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise PlanError(
            f"plan/plan.yaml: {field_name}: module {module_name!r} has no {attribute!r}",
            hint="use module:Class with a class defined in that module",
        ) from None


def _forget_other_workspace(workspace: Path, package: str) -> None:
    """Drop ``package`` from sys.modules if it was imported from another workspace.

    Every workspace calls its code ``src``; one process that touches two
    workspaces (tests, `fx workspace create` then a federation) must not mix them.
    """
    loaded = sys.modules.get(package)
    origin = getattr(loaded, "__file__", None)
    if loaded is None or (
        origin is not None and Path(origin).resolve().is_relative_to(workspace.resolve())
    ):
        return
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]
    sys.path[:] = [entry for entry in sys.path if entry != str(Path(origin or "").parent.parent)]


def build_runner(
    workspace: Path,
    reference: str,
    *,
    data_dir: Path,
    settings: Mapping[str, Any],
    collaborator: str,
) -> TaskRunner:
    runner_class = import_from_workspace(workspace, reference, field_name="model.runner")
    try:
        runner: TaskRunner = runner_class(
            data_dir=data_dir, settings=settings, collaborator=collaborator
        )
    except (FileNotFoundError, ValueError) as exc:
        raise TaskError(
            f"{reference} could not load the data of {collaborator!r}: {exc}",
            hint=f"check plan/data.yaml and the files under {data_dir}",
        ) from None
    return runner


def build_initial_weights(
    workspace: Path, reference: str, settings: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """The first global model, built by the runner without touching any data.

    A runner class may define an ``initial_weights(settings)`` classmethod;
    otherwise it is constructed (runners read their data lazily, on the first
    task) and asked for its weights.
    """
    runner_class = import_from_workspace(workspace, reference, field_name="model.runner")
    factory = getattr(runner_class, "initial_weights", None)
    if factory is not None:
        weights: dict[str, np.ndarray] = factory(settings)
        return weights
    runner: TaskRunner = runner_class(
        data_dir=workspace / "data", settings=settings, collaborator="aggregator"
    )
    return runner.get_weights()
