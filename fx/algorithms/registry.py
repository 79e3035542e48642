"""Aggregation algorithms by the names a plan uses."""

from __future__ import annotations

from pathlib import Path

from fx.algorithms.base import Aggregation
from fx.algorithms.fedavg import FedAvg
from fx.errors import PlanError

__all__ = [
    "AGGREGATIONS",
    "WORKSPACE_MODULE",
    "load_aggregation",
    "resolve_aggregation",
    "valid_aggregation_names",
]

#: The package a workspace's own code lives in: ``module:Class`` must name a module in it.
WORKSPACE_MODULE = "src"
_FIELD = "aggregator.aggregation"

#: Registered name -> aggregation class (constructed with no arguments).
AGGREGATIONS: dict[str, type[Aggregation]] = {
    "fedavg": FedAvg,
}


def resolve_aggregation(name: str) -> Aggregation:
    """A new instance of the aggregation registered as ``name``.

    ``ValueError`` listing the valid names if there is none.
    """
    try:
        cls = AGGREGATIONS[name]
    except KeyError:
        valid = ", ".join(sorted(AGGREGATIONS))
        raise ValueError(f"unknown aggregation {name!r}; valid names: {valid}") from None
    return cls()


def valid_aggregation_names() -> str:
    """What an ``aggregator.aggregation`` may be, for error hints."""
    return f"{', '.join(sorted(AGGREGATIONS))}, or module:Class from the workspace's src/"


def load_aggregation(name: str, workspace: Path) -> Aggregation:
    """A new instance of the aggregation a plan names: a registered name or ``module:Class``.

    ``module:Class`` is user code in ``workspace``'s ``src/`` package (e.g.
    ``src.robust:TrimmedMean``), constructed with no arguments. PlanError naming
    ``aggregator.aggregation`` and the fix when the name is unknown, the module or
    class cannot be imported, or the class is not an Aggregation.
    """
    if ":" not in name:
        if name not in AGGREGATIONS:
            raise PlanError(
                f"plan/plan.yaml: {_FIELD}: unknown aggregation {name!r}",
                hint=f"use one of: {valid_aggregation_names()}",
            )
        return AGGREGATIONS[name]()
    # Imported here: the workspace loader sits above the algorithms, which stay pure numpy.
    from fx.collaborator.runner import import_from_workspace

    module_name, _, class_name = name.partition(":")
    if module_name.split(".")[0] != WORKSPACE_MODULE or not class_name:
        raise PlanError(
            f"plan/plan.yaml: {_FIELD}: {name!r} is not module:Class in the workspace's src/",
            hint=f"write it as {WORKSPACE_MODULE}.<module>:<Class> (e.g. "
            f"{WORKSPACE_MODULE}.aggregation:MyAverage), or use one of: "
            f"{', '.join(sorted(AGGREGATIONS))}",
        )
    workspace = workspace.resolve()
    cls = import_from_workspace(workspace, name, field_name=_FIELD)
    if not isinstance(cls, type):
        raise PlanError(
            f"plan/plan.yaml: {_FIELD}: {name!r} is a {type(cls).__name__}, not a class",
            hint="name a class with reset(), add(), result() and count (fx.algorithms.base)",
        )
    source = _defined_in(cls)
    if source is None or not source.is_relative_to(workspace):
        raise PlanError(
            f"plan/plan.yaml: {_FIELD}: {name!r} was not loaded from {workspace / 'src'}",
            hint="put the class in a module under the workspace's src/",
        )
    try:
        instance = cls()
    except TypeError as exc:
        raise PlanError(
            f"plan/plan.yaml: {_FIELD}: {name!r} cannot be constructed without arguments ({exc})",
            hint="give every __init__ parameter a default",
        ) from None
    if not isinstance(instance, Aggregation):
        missing = [
            member
            for member in ("reset", "add", "result", "count")
            if not hasattr(instance, member)
        ]
        raise PlanError(
            f"plan/plan.yaml: {_FIELD}: {name!r} is not an Aggregation "
            f"(missing: {', '.join(missing)})",
            hint="implement the protocol in fx/algorithms/base.py",
        )
    return instance


def _defined_in(cls: type) -> Path | None:
    """The file that defines ``cls`` (None for a built-in)."""
    import inspect

    try:
        return Path(inspect.getfile(cls)).resolve()
    except TypeError:
        return None
