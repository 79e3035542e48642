"""Load plan.yaml, cols.yaml and data.yaml into typed values, validating each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fx.errors import PlanError
from fx.plan.documents import read_yaml, validate_document
from fx.plan.identity import federation_id
from fx.plan.model import (
    AggregatorSettings,
    BestMetric,
    CollaboratorSettings,
    ModelSpec,
    NetworkSettings,
    Plan,
    TaskSpec,
)
from fx.plan.notifications import notification_settings
from fx.workspace.paths import WorkspacePaths


def plan_from_document(document: dict[str, Any], path: Path) -> Plan:
    """Validate ``document`` (the parsed plan.yaml at ``path``) and build a Plan."""
    validate_document(document, "plan", path)
    agg = dict(document["aggregator"])
    best = agg.pop("best_metric", None)
    tasks = tuple(
        TaskSpec(name=name, kind=spec["kind"], settings=dict(spec.get("settings") or {}))
        for name, spec in document["tasks"].items()
    )
    plan = Plan(
        template=document["template"],
        aggregator=AggregatorSettings(
            **agg, best_metric=BestMetric(**best) if best is not None else None
        ),
        collaborator=CollaboratorSettings(**(document.get("collaborator") or {})),
        network=NetworkSettings(**document["network"]),
        tasks=tasks,
        model=ModelSpec(
            runner=document["model"]["runner"],
            settings=dict(document["model"].get("settings") or {}),
        ),
        federation_id=federation_id(document),
        document=document,
        notifications=notification_settings(document, path),
    )
    _check_consistency(plan, path)
    return plan


def _check_consistency(plan: Plan, path: Path) -> None:
    if not plan.tasks_of_kind("train"):
        raise PlanError(
            f"{path}: tasks: no task has kind 'train'", hint="add one, e.g. train: {kind: train}"
        )
    best = plan.aggregator.best_metric
    if best is not None:
        validate_names = [task.name for task in plan.tasks_of_kind("validate")]
        if best.task not in validate_names:
            raise PlanError(
                f"{path}: aggregator.best_metric.task: {best.task!r} is not a validate task",
                hint=f"use one of: {', '.join(validate_names) or '(none: add a validate task)'}",
            )
    from fx.algorithms.registry import AGGREGATIONS, valid_aggregation_names

    # module:Class is imported (and checked) by load_aggregation, when the plan runs.
    name = plan.aggregator.aggregation
    if ":" not in name and name not in AGGREGATIONS:
        raise PlanError(
            f"{path}: aggregator.aggregation: unknown aggregation {name!r}",
            hint=f"use one of: {valid_aggregation_names()}",
        )


def load_plan(paths: WorkspacePaths) -> Plan:
    return plan_from_document(read_yaml(paths.plan), paths.plan)


def load_collaborator_names(paths: WorkspacePaths) -> list[str]:
    document = read_yaml(paths.cols)
    validate_document(document, "cols", paths.cols)
    return list(document["collaborators"])


def load_data_entries(paths: WorkspacePaths) -> dict[str, str]:
    """data.yaml's entries as written (collaborator -> path, relative or absolute)."""
    document = read_yaml(paths.data_config)
    validate_document(document, "data", paths.data_config)
    return dict(document["data"])


def load_data_paths(paths: WorkspacePaths) -> dict[str, Path]:
    """Each collaborator's data directory, resolved against the workspace root."""
    return {name: paths.root / value for name, value in load_data_entries(paths).items()}


def load_data_path(paths: WorkspacePaths, collaborator: str) -> Path:
    data = load_data_paths(paths)
    if collaborator not in data:
        raise PlanError(
            f"{paths.data_config}: data: no entry for collaborator {collaborator!r}",
            hint=f"add `{collaborator}: data/{collaborator}` under `data:`",
        )
    if not data[collaborator].is_dir():
        raise PlanError(
            f"{paths.data_config}: data.{collaborator}: {data[collaborator]} is not a directory",
            hint=f"put {collaborator}'s data there, or point data.{collaborator} at it",
        )
    return data[collaborator]
