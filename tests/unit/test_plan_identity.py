"""The federation id: stable across key order and YAML formatting, changed by any value."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from fx.plan.identity import canonical_json, differing_keys, federation_id
from fx.plan.loader import load_plan
from fx.workspace.create import NetworkChoice, create_workspace
from fx.workspace.paths import WorkspacePaths
from fx.workspace.templates import get_template


@pytest.fixture
def paths(tmp_path: Path) -> WorkspacePaths:
    return create_workspace(
        get_template("numpy_logreg_digits"),
        tmp_path / "ws",
        collaborators=["site-1"],
        network=NetworkChoice("localhost", 50051),
        rounds=4,
    )


def _reversed(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _reversed(value[key]) for key in reversed(list(value))}
    return value


def test_canonical_form_is_sorted_compact_json() -> None:
    document = {"b": {"y": 1, "x": [2.0, "é"]}, "a": 0.5}
    assert canonical_json(document) == '{"a":0.5,"b":{"x":[2,"é"],"y":1}}'


def test_key_order_comments_and_yaml_style_do_not_change_the_id(paths: WorkspacePaths) -> None:
    original = load_plan(paths)
    original_text = paths.plan.read_text()
    document = yaml.safe_load(original_text)
    restyled = (
        "# the same plan, written by someone else\n"
        + yaml.safe_dump(_reversed(document), sort_keys=False, default_flow_style=True, width=40)
        + "\n\n# trailing comment\n"
    )
    paths.plan.write_text(restyled)
    assert restyled.splitlines()[1].startswith("{model: {settings:")  # reversed, flow style
    assert restyled != original_text
    assert load_plan(paths).federation_id == original.federation_id


def test_a_number_is_a_number_however_it_is_written() -> None:
    base = {"aggregator": {"rounds_to_train": 4, "quorum": 1}, "network": {"chunk_mib": 4}}
    floats = {"aggregator": {"rounds_to_train": 4.0, "quorum": 1.0}, "network": {"chunk_mib": 4.0}}
    assert federation_id(base) == federation_id(floats)
    assert differing_keys(base, floats) == []
    assert federation_id({"q": 0.5}) != federation_id({"q": 0.25})


def test_the_id_is_sha256_hex_of_the_canonical_form() -> None:
    import hashlib

    document = {"template": "t", "aggregator": {"rounds_to_train": 1}}
    expected = hashlib.sha256(canonical_json(document).encode()).hexdigest()
    assert federation_id(document) == expected and len(expected) == 64


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("aggregator", "rounds_to_train"), 5),
        (("network", "agg_port"), 50052),
        (("model", "settings", "learning_rate"), 0.5),
        (("tasks", "train", "settings", "epochs"), 2),
        (("template",), "other"),
    ],
)
def test_any_value_changes_the_id_and_is_named(
    paths: WorkspacePaths, path: tuple[str, ...], value: object
) -> None:
    ours = load_plan(paths).document
    theirs = copy.deepcopy(ours)
    target = theirs
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert federation_id(theirs) != federation_id(ours)
    assert differing_keys(ours, theirs) == [".".join(path)]


def test_keys_present_on_one_side_only_are_named() -> None:
    ours = {"aggregator": {"rounds_to_train": 3, "linger_s": 10}, "tasks": {"train": {}}}
    theirs = {"aggregator": {"rounds_to_train": 3}, "tasks": {"train": {}, "extra": {"x": 1}}}
    assert differing_keys(ours, theirs) == ["aggregator.linger_s", "tasks.extra.x"]
