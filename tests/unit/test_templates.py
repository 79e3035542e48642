"""The bundled workspace templates: shards, runners, and a 5-round FedAvg in-process.

Each test copies a template's ``src/`` into ``tmp_path`` the way ``fx workspace
create`` does and imports it as the package ``src`` with ``tmp_path`` on sys.path.
Both templates use that package name, so the fixture drops every ``src*`` module
before and after each test.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fx.collaborator.runner import TaskResult

REPO = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = REPO / "templates"
TEMPLATES = ["torch_cnn_digits", "numpy_logreg_digits"]
COLLABORATORS = ["site-a", "site-b"]
ROUNDS = 5


@dataclass
class Template:
    """A template copied into a fresh workspace, with its entry points imported."""

    name: str
    root: Path
    config: dict[str, Any]
    runner_class: Callable[..., Any]
    prepare_shards: Callable[..., dict[str, str]]

    def runner(self, collaborator: str, data_dir: Path | None = None) -> Any:
        return self.runner_class(
            data_dir or self.root / "data" / collaborator, self.config["settings"], collaborator
        )


def _forget_src_modules() -> None:
    for name in [m for m in sys.modules if m == "src" or m.startswith("src.")]:
        del sys.modules[name]


def _import(reference: str) -> Any:
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


@pytest.fixture(params=TEMPLATES)
def template(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Template]:
    name = request.param
    if name == "torch_cnn_digits":
        pytest.importorskip("torch")
    shutil.copytree(TEMPLATES_DIR / name / "src", tmp_path / "src")
    config = yaml.safe_load((TEMPLATES_DIR / name / "template.yaml").read_text())
    _forget_src_modules()
    sys.path.insert(0, str(tmp_path))
    try:
        yield Template(
            name=name,
            root=tmp_path,
            config=config,
            runner_class=_import(config["runner"]),
            prepare_shards=_import(config["prepare_data"]),
        )
    finally:
        sys.path.remove(str(tmp_path))
        _forget_src_modules()


def fedavg(updates: list[Mapping[str, np.ndarray]], counts: list[int]) -> dict[str, np.ndarray]:
    """Sample-weighted mean per tensor in float64, cast back; integer tensors are rounded."""
    shares = np.asarray(counts, dtype=np.float64) / sum(counts)
    averaged = {}
    for name, first in updates[0].items():
        mean = sum(
            share * u[name].astype(np.float64) for share, u in zip(shares, updates, strict=True)
        )
        if np.issubdtype(first.dtype, np.integer):
            mean = np.rint(mean)
        averaged[name] = np.asarray(mean).astype(first.dtype)
    return averaged


def _rows(path: Path) -> set[bytes]:
    with np.load(path) as archive:
        x = archive["x"]
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def test_template_yaml_names_everything_fx_needs(template: Template) -> None:
    config = template.config
    assert set(config) >= {
        "description",
        "runner",
        "prepare_data",
        "settings",
        "tasks",
        "best_metric",
        "requirements",
    }
    assert {task["kind"] for task in config["tasks"].values()} == {"train", "validate"}
    assert config["best_metric"]["task"] in config["tasks"]
    assert config["best_metric"]["direction"] in {"maximize", "minimize"}
    assert "seed" in config["settings"]


def test_prepare_shards_writes_disjoint_nonempty_shards(template: Template) -> None:
    shards = template.prepare_shards(template.root / "data", COLLABORATORS, seed=0)

    assert shards == {name: f"data/{name}" for name in COLLABORATORS}
    seen: set[bytes] = set()
    total = 0
    for relative in shards.values():
        for split in ("train", "valid"):
            rows = _rows(template.root / relative / f"{split}.npz")
            assert rows, f"{relative}/{split}.npz is empty"
            assert not rows & seen, f"{relative}/{split}.npz shares samples with another shard"
            seen |= rows
            total += len(rows)
    assert total == len(seen) == 1797  # every digit used exactly once


def test_prepare_shards_is_deterministic_and_checks_names(template: Template) -> None:
    template.prepare_shards(template.root / "one", COLLABORATORS, seed=3)
    template.prepare_shards(template.root / "two", COLLABORATORS, seed=3)
    for name in COLLABORATORS:
        assert _rows(template.root / "one" / name / "train.npz") == _rows(
            template.root / "two" / name / "train.npz"
        )
    with pytest.raises(ValueError, match="unique"):
        template.prepare_shards(template.root / "data", ["a", "a"])
    with pytest.raises(ValueError, match="directory name"):
        template.prepare_shards(template.root / "data", ["../escape"])


def test_five_rounds_of_fedavg_reach_90_percent(template: Template) -> None:
    template.prepare_shards(template.root / "data", COLLABORATORS, seed=0)
    runners = [template.runner(name) for name in COLLABORATORS]
    global_weights = runners[0].get_weights()
    dtypes = {name: value.dtype for name, value in global_weights.items()}
    train_task = template.config["tasks"]["train"]["settings"]
    validate_task = template.config["tasks"]["validate"]["settings"]

    history: list[list[float]] = []
    for _ in range(ROUNDS):
        updates, counts = [], []
        for runner in runners:
            runner.set_weights(global_weights)
            result = runner.train(train_task)
            assert isinstance(result, TaskResult)
            assert result.sample_count > 0 and np.isfinite(result.metrics["loss"])
            updates.append(runner.get_weights())
            counts.append(result.sample_count)
        global_weights = fedavg(updates, counts)

        accuracies = []
        for runner in runners:
            runner.set_weights(global_weights)
            assert {n: v.dtype for n, v in runner.get_weights().items()} == dtypes
            result = runner.validate(validate_task)
            assert set(result.metrics) >= {"accuracy", "loss"}
            accuracies.append(result.metrics["accuracy"])
        history.append(accuracies)

    assert min(history[-1]) >= 0.9, f"validation accuracy per round: {history}"


def test_weights_keep_their_dtypes_and_order(template: Template) -> None:
    runner = template.runner(COLLABORATORS[0])
    weights = runner.get_weights()
    assert all(isinstance(value, np.ndarray) for value in weights.values())
    assert all(value.dtype == np.float32 or value.dtype == np.int64 for value in weights.values())
    if template.name == "torch_cnn_digits":
        counters = [n for n in weights if n.endswith("num_batches_tracked")]
        assert counters and all(weights[n].dtype == np.int64 for n in counters)

    # Arrays decoded off the wire are often read-only views; they must load as they are.
    changed = {}
    for name, value in weights.items():
        new = np.asarray(value + 1, dtype=value.dtype)  # asarray: keep 0-d arrays arrays
        new.flags.writeable = False
        changed[name] = new
    runner.set_weights(changed)
    reloaded = runner.get_weights()
    assert list(reloaded) == list(weights)
    for name, value in reloaded.items():
        assert value.dtype == weights[name].dtype and value.shape == weights[name].shape
        np.testing.assert_array_equal(value, changed[name])
    # get_weights hands out copies: changing one does not change the model.
    next(iter(reloaded.values()))[...] = 0
    np.testing.assert_array_equal(
        next(iter(runner.get_weights().values())), next(iter(changed.values()))
    )


def test_set_weights_rejects_what_does_not_fit(template: Template) -> None:
    runner = template.runner(COLLABORATORS[0])
    weights = runner.get_weights()
    first = next(iter(weights))

    with pytest.raises(ValueError, match="missing"):
        runner.set_weights({k: v for k, v in weights.items() if k != first})
    with pytest.raises(ValueError, match=first):
        runner.set_weights({**weights, first: weights[first].astype(np.float64)})
    with pytest.raises(ValueError, match=first):
        runner.set_weights({**weights, first: np.zeros((3, 3), dtype=weights[first].dtype)})


def test_training_is_deterministic_given_the_seed(template: Template) -> None:
    template.prepare_shards(template.root / "data", COLLABORATORS, seed=0)
    first, second = template.runner(COLLABORATORS[0]), template.runner(COLLABORATORS[0])
    first.train({"epochs": 1})
    second.train({"epochs": 1})
    for name, value in first.get_weights().items():
        np.testing.assert_array_equal(value, second.get_weights()[name])


def test_missing_data_names_the_path(template: Template) -> None:
    data_dir = template.root / "data" / "nowhere"
    runner = template.runner("nowhere", data_dir)  # building a runner needs no data

    with pytest.raises(FileNotFoundError) as missing:
        runner.validate({})
    assert str(data_dir / "valid.npz") in str(missing.value)
    assert "'x'" in str(missing.value) and "'y'" in str(missing.value)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda path: path.write_bytes(b"not an archive"), "cannot be read"),
        (lambda path: np.savez(path, x=np.zeros((4, 8, 8))), "needs 'x' and 'y'"),
        (lambda path: np.save(path.with_suffix(""), np.zeros(3)), "cannot be read"),
        (lambda path: np.savez(path, x=np.zeros((4, 8, 8)), y=np.zeros(4)), "'y' has"),
        (lambda path: np.savez(path, x=np.zeros((4, 8, 8)), y=np.zeros(3, int)), "3"),
        (lambda path: np.savez(path, x=np.zeros((4, 8, 8)), y=np.full(4, 10)), "num_classes"),
        (lambda path: np.savez(path, x=np.zeros((4, 5, 5)), y=np.zeros(4, int)), "shape"),
    ],
    ids=["garbage", "no-y", "npy", "float-labels", "length", "label-range", "sample-shape"],
)
def test_malformed_data_names_the_path_and_format(
    template: Template, write: Callable[[Path], None], message: str
) -> None:
    data_dir = template.root / "data" / "mine"
    data_dir.mkdir(parents=True)
    path = data_dir / "valid.npz"
    write(path)
    if not path.exists():  # np.save wrote valid.npy; present it under the expected name
        data_dir.joinpath("valid.npy").rename(path)

    with pytest.raises(ValueError, match=message) as malformed:
        template.runner("mine", data_dir).validate({})
    assert str(path) in str(malformed.value)


def test_numpy_template_runs_without_torch_or_sklearn(tmp_path: Path) -> None:
    # A fresh interpreter: this one may already have torch loaded by the other template.
    shutil.copytree(TEMPLATES_DIR / "numpy_logreg_digits" / "src", tmp_path / "src")
    code = (
        "import sys, src.runner\n"
        "loaded = {'torch', 'sklearn'} & set(sys.modules)\n"
        "assert not loaded, f'the numpy runner imported {loaded}'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
