"""Read a YAML document and check it against its JSON Schema, with errors users can act on."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml

from fx.errors import PlanError
from fx.resources import schema_path


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse ``path`` as one YAML mapping, or raise PlanError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(
            f"{path} does not exist",
            hint="create it with `fx workspace create` or restore it from the federation's export",
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanError(f"{path}{where}: not valid YAML: {problem}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise PlanError(
            f"{path}: expected a mapping of keys at the top level, found {type(document).__name__}"
        )
    return document


@functools.cache
def _validator(schema_name: str) -> Any:
    import jsonschema

    schema = json.loads(schema_path(schema_name).read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def key_path(parts: Any) -> str:
    """Dotted key path as users write it: aggregator.rounds_to_train, tasks.train.kind."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe(error: Any) -> str:
    where = key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = (
            sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        )
        unknown = ", ".join(repr(key) for key in extra) or error.message
        hint = f"; valid keys here: {', '.join(allowed)}" if allowed else ""
        return f"{where}: unknown key {unknown}{hint}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    expected = f" (expected: {description})" if description else ""
    return f"{where}: {error.message}{expected}"


def validate_document(document: dict[str, Any], schema_name: str, path: Path) -> None:
    """Raise PlanError listing every schema violation in ``document`` (read from ``path``)."""
    errors = sorted(
        _validator(schema_name).iter_errors(document), key=lambda e: list(e.absolute_path)
    )
    if errors:
        lines = "\n  ".join(_describe(error) for error in errors)
        raise PlanError(
            f"{path} is invalid:\n  {lines}",
            hint=f"the schema is workspace_schema/{schema_name}.schema.json; see docs/plan.md",
        )
