"""The federation id: a hash of the plan's canonical form.

Canonical = JSON with sorted keys and no insignificant whitespace, so key order,
comments and YAML formatting do not change the id but any value does. A number
is a number however it is spelled: ``4``, ``4.0`` and ``+4`` hash alike, as they
compare equal (otherwise two plans could differ in id with no differing key).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fx.plan.model import shared_document


def canonical_json(document: dict[str, Any]) -> str:
    return json.dumps(
        _canonical_numbers(document), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def _canonical_numbers(value: Any) -> Any:
    """``value`` with every integral float (4.0, -0.0) written as the int it equals."""
    if isinstance(value, dict):
        return {key: _canonical_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical_numbers(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def federation_id(document: dict[str, Any]) -> str:
    """SHA-256 of the canonical plan, hex. Aggregator-local sections (notifications)
    are left out: they do not change what the federation trains."""
    return hashlib.sha256(canonical_json(shared_document(document)).encode("utf-8")).hexdigest()


def flatten(document: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": leaf} for every leaf of a nested mapping (lists are leaves)."""
    if isinstance(document, dict) and document:
        flat: dict[str, Any] = {}
        for key, value in document.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: document}


def differing_keys(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Key paths whose values differ between two plans (present in only one counts)."""
    left, right = flatten(ours), flatten(theirs)
    return sorted(key for key in left.keys() | right.keys() if left.get(key) != right.get(key))
