"""Aggregation algorithms by the names a plan uses."""

from __future__ import annotations

from fx.algorithms.base import Aggregation
from fx.algorithms.fedavg import FedAvg

__all__ = ["AGGREGATIONS", "resolve_aggregation"]

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
