"""docs/plan.md is generated from workspace_schema/ and must not drift from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fx.algorithms.registry import AGGREGATIONS
from fx.plan.reference import main, render_reference

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "plan.md"


def test_docs_plan_md_is_what_the_generator_writes() -> None:
    assert DOC.read_text(encoding="utf-8") == render_reference(), (
        "docs/plan.md is out of date: run `python -m fx.plan.reference > docs/plan.md`"
    )


def _key_paths(schema: dict[str, Any], prefix: str = "") -> list[str]:
    paths: list[str] = []
    for key, subschema in schema.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        paths.append(path)
        paths += _key_paths(subschema, path)
        paths += _key_paths(subschema.get("items", {}), f"{path}[]")
    return paths


@pytest.mark.parametrize("name", ["plan", "cols", "data"])
def test_every_key_of_the_schema_has_a_row_with_its_default(name: str) -> None:
    text = render_reference()
    schema = json.loads((REPO / "workspace_schema" / f"{name}.schema.json").read_text())
    paths = _key_paths(schema)
    assert paths
    rows = {
        line.split("|")[1].strip().strip("`"): line
        for line in text.splitlines()
        if line.startswith("| `")
    }
    for path in paths:
        assert path in rows, path
    for path in paths:
        node: Any = schema
        for part in path.replace("[]", ".[]").split("."):
            node = node["items"] if part == "[]" else node["properties"][part]
        if "default" in node:
            assert f"`{json.dumps(node['default'])}`" in rows[path], path
        if "description" in node:
            assert node["description"] in rows[path].replace("\\|", "|"), path


def test_registered_aggregations_are_listed() -> None:
    text = render_reference()
    for name in AGGREGATIONS:
        assert f"- `{name}`" in text


def test_check_mode_detects_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "plan.md"
    stale.write_text(render_reference().replace("Number of training rounds", "Rounds"))
    assert main(["--check", str(stale)]) == 1
    assert "is out of date" in capsys.readouterr().err
    stale.write_text(render_reference())
    assert main(["--check", str(stale)]) == 0
