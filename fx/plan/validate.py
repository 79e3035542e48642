"""`fx plan validate`: plan.yaml, cols.yaml and data.yaml, each against its schema and
all three against each other.

Every problem is collected, not just the first, and each names the file, the
key path and the fix. The checks, in order:

- each file parses and matches its schema in workspace_schema/;
- plan.yaml is consistent (a train task, ``best_metric.task`` is a validate task,
  a registered aggregation name);
- no collaborator is called ``aggregator`` (that name is the aggregator's certificate);
- every collaborator in cols.yaml has an entry in data.yaml, and data.yaml names
  no one else;
- the components the plan names by ``module:Class`` (``model.runner``, and
  ``aggregator.aggregation`` when it is not a registered name) import from the
  workspace's src/ and are what fx expects.

Whether a collaborator's data directory exists is not checked: in a real
federation only that collaborator's machine holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from fx.errors import PlanError
from fx.pki.names import AGGREGATOR_NAME
from fx.plan.loader import load_collaborator_names, load_data_entries, load_plan
from fx.plan.model import Plan
from fx.workspace.paths import WorkspacePaths

_RUNNER_METHODS = ("get_weights", "set_weights", "train", "validate")

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the workspace's plan files: where, what, and how to fix it."""

    file: Path
    text: str
    """``<file>: <key path>: <what is wrong>``."""
    fix: str | None = None

    def __str__(self) -> str:
        lines = [line.strip() for line in self.text.splitlines()]
        if self.fix is not None:
            lines.append(f"fix: {self.fix}")
        return "\n    ".join(lines)


@dataclass(frozen=True)
class ValidatedWorkspace:
    """The three plan files, loaded and checked against each other."""

    plan: Plan
    collaborators: tuple[str, ...]
    data: dict[str, str] = field(default_factory=dict)
    """Each collaborator's data path as data.yaml writes it."""


def find_problems(
    paths: WorkspacePaths, *, import_code: bool = True
) -> tuple[ValidatedWorkspace | None, list[Problem]]:
    """Check the workspace's plan files; the loaded result when there is no problem.

    ``import_code=False`` skips importing the workspace's src/ (the runner and a
    ``module:Class`` aggregation), for a machine without the template's framework.
    """
    problems: list[Problem] = []
    plan = _load(paths.plan, problems, lambda: load_plan(paths))
    collaborators = _load(paths.cols, problems, lambda: load_collaborator_names(paths))
    data = _load(paths.data_config, problems, lambda: load_data_entries(paths))

    if collaborators is not None:
        problems += _reserved_names(paths, collaborators)
    if collaborators is not None and data is not None:
        problems += _data_coverage(paths, collaborators, data)
    if plan is not None and import_code:
        problems += _components(paths, plan)

    if problems or plan is None or collaborators is None or data is None:
        return None, problems
    return ValidatedWorkspace(plan, tuple(collaborators), data), []


def validate_workspace(paths: WorkspacePaths, *, import_code: bool = True) -> ValidatedWorkspace:
    """The checked plan files, or one PlanError that lists every problem with its fix."""
    validated, problems = find_problems(paths, import_code=import_code)
    if validated is None:
        raise PlanError(
            format_problems(problems),
            hint="fix these and run `fx plan validate` again; docs/plan.md describes every key",
        )
    return validated


def format_problems(problems: list[Problem]) -> str:
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    return f"the plan has {count}:\n" + "\n".join(f"  - {problem}" for problem in problems)


def _load(file: Path, problems: list[Problem], load: Callable[[], T]) -> T | None:
    try:
        return load()
    except PlanError as error:
        problems.append(Problem(file, error.message, error.hint))
        return None


def _reserved_names(paths: WorkspacePaths, collaborators: list[str]) -> list[Problem]:
    return [
        Problem(
            paths.cols,
            f"{paths.cols}: collaborators[{index}]: {name!r} is reserved for the aggregator's "
            "certificate",
            "rename that collaborator (and its entry in plan/data.yaml)",
        )
        for index, name in enumerate(collaborators)
        if name == AGGREGATOR_NAME
    ]


def _data_coverage(
    paths: WorkspacePaths, collaborators: list[str], data: dict[str, str]
) -> list[Problem]:
    problems = [
        Problem(
            paths.data_config,
            f"{paths.data_config}: data.{name}: missing: collaborator {name!r} "
            f"(in {paths.cols.name}) has no data",
            f"add `{name}: data/{name}` under `data:` (the directory holding its data, "
            "relative to the workspace)",
        )
        for name in collaborators
        if name not in data
    ]
    problems += [
        Problem(
            paths.data_config,
            f"{paths.data_config}: data.{name}: {name!r} is not a collaborator in "
            f"{paths.cols.name}",
            f"remove `{name}` from data.yaml, or add it with "
            f"`fx collaborator create --name {name}`",
        )
        for name in data
        if name not in collaborators
    ]
    return problems


def _components(paths: WorkspacePaths, plan: Plan) -> list[Problem]:
    from fx.algorithms.registry import load_aggregation
    from fx.collaborator.runner import import_from_workspace

    problems: list[Problem] = []
    try:
        runner = import_from_workspace(paths.root, plan.model.runner, field_name="model.runner")
    except PlanError as error:
        problems.append(Problem(paths.plan, error.message, error.hint))
    else:
        missing = [name for name in _RUNNER_METHODS if not callable(getattr(runner, name, None))]
        if not isinstance(runner, type) or missing:
            what = (
                "not a class" if not isinstance(runner, type) else f"missing {', '.join(missing)}"
            )
            problems.append(
                Problem(
                    paths.plan,
                    f"{paths.plan}: model.runner: {plan.model.runner!r} is not a TaskRunner "
                    f"({what})",
                    "name a class with get_weights, set_weights, train and validate "
                    "(see fx/collaborator/runner.py)",
                )
            )
    if ":" in plan.aggregator.aggregation:
        try:
            load_aggregation(plan.aggregator.aggregation, paths.root)
        except PlanError as error:
            problems.append(Problem(paths.plan, error.message, error.hint))
    return problems
