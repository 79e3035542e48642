"""`fx plan validate`: broken plan files, each with the message that names file, key and fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fx.algorithms.fedavg import FedAvg
from fx.algorithms.registry import load_aggregation
from fx.errors import PlanError
from fx.plan.effective import effective_document
from fx.plan.validate import find_problems, validate_workspace
from fx.workspace.create import NetworkChoice, create_workspace
from fx.workspace.paths import WorkspacePaths
from fx.workspace.templates import get_template

Document = dict[str, Any]


@pytest.fixture
def paths(tmp_path: Path) -> WorkspacePaths:
    return create_workspace(
        get_template("numpy_logreg_digits"),
        tmp_path / "ws",
        collaborators=["site-1", "site-2"],
        network=NetworkChoice("localhost", 50051),
        rounds=3,
    )


def _edit(path: Path, change: Callable[[Document], object]) -> None:
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def _problems(paths: WorkspacePaths) -> str:
    with pytest.raises(PlanError) as raised:
        validate_workspace(paths)
    assert raised.value.hint is not None and "fx plan validate" in raised.value.hint
    return raised.value.message


def test_a_fresh_workspace_is_valid(paths: WorkspacePaths) -> None:
    checked = validate_workspace(paths)
    assert checked.collaborators == ("site-1", "site-2")
    assert checked.data == {"site-1": "data/site-1", "site-2": "data/site-2"}
    assert checked.plan.aggregator.rounds_to_train == 3
    assert find_problems(paths) == (checked, [])


def _set(section: str, key: str, value: object) -> Callable[[Document], object]:
    return lambda document: document[section].__setitem__(key, value)


BROKEN_PLANS: list[tuple[str, Callable[[Document], object], list[str]]] = [
    (
        "wrong-type",
        _set("aggregator", "rounds_to_train", "five"),
        ["plan.yaml", "aggregator.rounds_to_train: 'five' is not of type 'integer'"],
    ),
    (
        "out-of-range",
        _set("network", "agg_port", 70000),
        ["plan.yaml", "network.agg_port: 70000 is greater than the maximum of 65535"],
    ),
    (
        "unknown-key",
        _set("aggregator", "rounds", 3),
        ["plan.yaml", "aggregator: unknown key 'rounds'", "valid keys here:", "rounds_to_train"],
    ),
    (
        "unknown-top-level-key",
        lambda document: document.__setitem__("extras", {}),
        ["(top level): unknown key 'extras'"],
    ),
    (
        "missing-section",
        lambda document: document.pop("network"),
        ["plan.yaml", "'network' is a required property"],
    ),
    (
        "unknown-component",
        _set("aggregator", "aggregation", "fedprox"),
        [
            "aggregator.aggregation: unknown aggregation 'fedprox'",
            "fix: use one of: fedavg, or module:Class",
        ],
    ),
    (
        "component-outside-src",
        _set("aggregator", "aggregation", "numpy:ndarray"),
        ["aggregator.aggregation: 'numpy:ndarray' is not module:Class in the workspace's src/"],
    ),
    (
        "component-not-importable",
        _set("aggregator", "aggregation", "src.robust:TrimmedMean"),
        ["aggregator.aggregation: cannot import module 'src.robust'", "src/robust.py exists"],
    ),
    (
        "runner-not-importable",
        _set("model", "runner", "src.nothing:Runner"),
        ["model.runner: cannot import module 'src.nothing'"],
    ),
    (
        "runner-class-missing",
        _set("model", "runner", "src.runner:Nope"),
        ["model.runner: module 'src.runner' has no 'Nope'"],
    ),
    (
        "runner-not-a-runner",
        _set("model", "runner", "src.data:load_split"),
        ["model.runner: 'src.data:load_split' is not a TaskRunner (not a class)"],
    ),
    (
        "unknown-task-kind",
        lambda document: document["tasks"]["train"].__setitem__("kind", "fit"),
        ["tasks.train.kind: 'fit' is not one of ['train', 'validate']"],
    ),
    (
        "best-metric-names-no-validate-task",
        lambda document: document["aggregator"]["best_metric"].__setitem__("task", "train"),
        [
            "aggregator.best_metric.task: 'train' is not a validate task",
            "fix: use one of: validate",
        ],
    ),
    (
        "no-train-task",
        lambda document: document["tasks"].pop("train"),
        ["tasks: no task has kind 'train'"],
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"),
    [case[1:] for case in BROKEN_PLANS],
    ids=[case[0] for case in BROKEN_PLANS],
)
def test_a_broken_plan_is_refused_with_a_precise_message(
    paths: WorkspacePaths, change: Callable[[Document], object], expected: list[str]
) -> None:
    _edit(paths.plan, change)
    message = _problems(paths)
    assert message.startswith("the plan has 1 problem:"), message
    for text in expected:
        assert text in message, message
    assert str(paths.plan) in message or "plan/plan.yaml" in message


def test_a_collaborator_without_data_is_named(paths: WorkspacePaths) -> None:
    _edit(paths.data_config, lambda document: document["data"].pop("site-2"))
    message = _problems(paths)
    assert f"{paths.data_config}: data.site-2: missing: collaborator 'site-2'" in message
    assert "fix: add `site-2: data/site-2` under `data:`" in message


def test_data_for_someone_not_in_cols_is_named(paths: WorkspacePaths) -> None:
    _edit(paths.data_config, lambda document: document["data"].__setitem__("site-9", "d/9"))
    message = _problems(paths)
    assert f"{paths.data_config}: data.site-9: 'site-9' is not a collaborator in cols.yaml" in (
        message
    )


def test_collaborator_names_are_checked(paths: WorkspacePaths) -> None:
    _edit(paths.cols, lambda document: document["collaborators"].append("Site_3"))
    message = _problems(paths)
    assert str(paths.cols) in message
    assert "collaborators[2]: 'Site_3' does not match" in message


def test_the_aggregators_name_is_reserved(paths: WorkspacePaths) -> None:
    _edit(paths.cols, lambda document: document["collaborators"].append("aggregator"))
    _edit(paths.data_config, lambda document: document["data"].__setitem__("aggregator", "d"))
    message = _problems(paths)
    assert "collaborators[2]: 'aggregator' is reserved for the aggregator's certificate" in message


def test_every_problem_in_every_file_is_reported_at_once(paths: WorkspacePaths) -> None:
    _edit(paths.plan, _set("aggregator", "aggregation", "fedprox"))
    _edit(paths.data_config, lambda document: document["data"].__setitem__("site-1", 5))
    paths.cols.write_text("collaborators: [site-1, site-2\n")
    message = _problems(paths)
    assert message.startswith("the plan has 3 problems:")
    assert "unknown aggregation 'fedprox'" in message
    assert f"{paths.cols}:2:1: not valid YAML" in message
    assert "data.site-1: 5 is not of type 'string'" in message


def test_a_missing_file_is_named(paths: WorkspacePaths) -> None:
    paths.data_config.unlink()
    assert f"{paths.data_config} does not exist" in _problems(paths)


def test_import_code_false_leaves_src_alone(paths: WorkspacePaths) -> None:
    _edit(paths.plan, _set("model", "runner", "src.nothing:Runner"))
    assert validate_workspace(paths, import_code=False).plan.model.runner == "src.nothing:Runner"


AVERAGE = """
from fx.algorithms.fedavg import FedAvg


class PlainAverage(FedAvg):
    pass


class NotAnAggregation:
    def reset(self, reference):
        pass


class NeedsArguments(FedAvg):
    def __init__(self, factor):
        super().__init__()
"""


def test_a_module_class_aggregation_loads_from_src(paths: WorkspacePaths) -> None:
    (paths.src / "average.py").write_text(AVERAGE)
    _edit(paths.plan, _set("aggregator", "aggregation", "src.average:PlainAverage"))
    assert validate_workspace(paths).plan.aggregator.aggregation == "src.average:PlainAverage"

    aggregation = load_aggregation("src.average:PlainAverage", paths.root)
    assert isinstance(aggregation, FedAvg) and type(aggregation).__name__ == "PlainAverage"
    reference = {"w": np.zeros(3, dtype=np.float32)}
    aggregation.reset(reference)
    aggregation.add({"w": np.ones(3, dtype=np.float32)}, 1.0)
    aggregation.add({"w": np.full(3, 3, dtype=np.float32)}, 1.0)
    np.testing.assert_array_equal(aggregation.result()["w"], np.full(3, 2, dtype=np.float32))


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("src.average:NotAnAggregation", "is not an Aggregation (missing: add, result, count)"),
        ("src.average:NeedsArguments", "cannot be constructed without arguments"),
        ("src.average:Missing", "module 'src.average' has no 'Missing'"),
        ("fedprox", "unknown aggregation 'fedprox'"),
    ],
)
def test_a_bad_aggregation_is_a_plan_error(
    paths: WorkspacePaths, reference: str, message: str
) -> None:
    (paths.src / "average.py").write_text(AVERAGE)
    with pytest.raises(PlanError) as raised:
        load_aggregation(reference, paths.root)
    assert "aggregator.aggregation" in raised.value.message
    assert message in raised.value.message
    if reference == "fedprox":
        assert raised.value.hint is not None and "fedavg" in raised.value.hint


def test_registered_names_resolve(paths: WorkspacePaths) -> None:
    assert isinstance(load_aggregation("fedavg", paths.root), FedAvg)


def test_the_effective_plan_fills_schema_defaults_only_where_missing() -> None:
    document: Document = {
        "fx_version": 1,
        "template": "t",
        "aggregator": {"rounds_to_train": 2, "quorum": 1},
        "collaborator": {},
        "network": {"agg_addr": "localhost", "agg_port": 1},
        "tasks": {"train": {"kind": "train"}},
        "model": {"runner": "src.runner:R"},
    }
    effective = effective_document(document)
    filled = effective.document
    assert filled["aggregator"]["aggregation"] == "fedavg"
    assert filled["aggregator"]["quorum"] == 1  # written: kept
    assert "best_metric" not in filled["aggregator"]  # optional section without a default
    assert filled["network"]["tls"] is True
    assert filled["tasks"]["train"]["settings"] == {}
    assert filled["model"]["settings"] == {}
    assert "aggregator.aggregation" in effective.defaulted
    assert "tasks.train.settings" in effective.defaulted
    assert "aggregator.quorum" not in effective.defaulted
    assert document["collaborator"] == {}  # the input is left as it was
