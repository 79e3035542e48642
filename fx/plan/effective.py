"""The effective plan: what plan.yaml says, with every key it leaves out at its schema default.

The defaults live in one place, workspace_schema/plan.schema.json (``"default"``),
so the plan a federation runs can be written out in full (`fx plan initialize`)
and shown in full (`fx plan show`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from fx.plan.documents import key_path
from fx.resources import schema_path


@dataclass(frozen=True)
class EffectivePlan:
    """A plan document with its defaults filled in, and the key paths that were filled."""

    document: dict[str, Any]
    defaulted: tuple[str, ...]


def effective_document(document: dict[str, Any], schema_name: str = "plan") -> EffectivePlan:
    """``document`` (a schema-valid plan) with each absent key that has a default added.

    Only keys whose parent mapping is present are filled: an optional section
    the plan leaves out (``aggregator.best_metric``) stays out. ``document`` is
    not modified.
    """
    schema = json.loads(schema_path(schema_name).read_text(encoding="utf-8"))
    filled = copy.deepcopy(document)
    defaulted: list[str] = []
    _fill(filled, schema, [], defaulted)
    return EffectivePlan(filled, tuple(defaulted))


def _fill(value: Any, schema: dict[str, Any], where: list[str], defaulted: list[str]) -> None:
    if not isinstance(value, dict):
        return
    properties: dict[str, Any] = schema.get("properties", {})
    for key, subschema in properties.items():
        if key not in value and "default" in subschema:
            value[key] = copy.deepcopy(subschema["default"])
            defaulted.append(key_path([*where, key]))
        if key in value:
            _fill(value[key], subschema, [*where, key], defaulted)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, item in value.items():
            if key not in properties:
                _fill(item, extra, [*where, key], defaulted)
