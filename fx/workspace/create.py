"""`fx workspace create`: a new workspace from a template, with a complete plan."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fx.collaborator.runner import import_from_workspace
from fx.errors import WorkspaceError
from fx.resources import bundled_dir
from fx.workspace.paths import WorkspacePaths
from fx.workspace.templates import Template

SCHEMA_DIR = "schema"  # inside plan/, so editors resolve the $schema line relatively


@dataclass(frozen=True)
class NetworkChoice:
    agg_addr: str = "localhost"
    agg_port: int = 50051


def default_collaborator_names(count: int) -> list[str]:
    return [f"site-{index}" for index in range(1, count + 1)]


def plan_document(template: Template, *, network: NetworkChoice, rounds: int) -> dict[str, Any]:
    """A complete plan: every key written out, nothing hidden in package defaults."""
    aggregator: dict[str, Any] = {
        "rounds_to_train": rounds,
        "aggregation": "fedavg",
    }
    if template.best_metric is not None:
        aggregator["best_metric"] = dict(template.best_metric)
    aggregator |= {
        "quorum": 0.5,
        "round_deadline_s": 3600,
        "liveness_timeout_s": 30,
        "linger_s": 10,
    }
    return {
        "fx_version": 1,
        "template": template.name,
        "aggregator": aggregator,
        "collaborator": {"connect_timeout_s": 120, "retry_max_backoff_s": 5, "heartbeat_s": 5},
        "network": {
            "agg_addr": network.agg_addr,
            "agg_port": network.agg_port,
            "tls": True,
            "keepalive_s": 30,
            "chunk_mib": 4,
        },
        "tasks": template.tasks,
        "model": {"runner": template.runner, "settings": template.settings},
    }


def dump_yaml(path: Path, document: dict[str, Any], *, schema: str | None = None) -> None:
    header = (
        f"# yaml-language-server: $schema={SCHEMA_DIR}/{schema}.schema.json\n" if schema else ""
    )
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    path.write_text(header + body, encoding="utf-8")


def create_workspace(
    template: Template,
    prefix: Path,
    *,
    collaborators: list[str],
    network: NetworkChoice,
    rounds: int,
) -> WorkspacePaths:
    """Copy ``template`` into ``prefix`` and write plan/, data/ and requirements.txt."""
    if prefix.exists() and (not prefix.is_dir() or any(prefix.iterdir())):
        raise WorkspaceError(
            f"{prefix} already exists and is not empty; refusing to overwrite it",
            hint="choose a new --prefix, or remove that directory first",
        )
    paths = WorkspacePaths(prefix.resolve())
    paths.root.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(
            template.directory / "src",
            paths.src,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        for extra in ("README.md",):
            if (template.directory / extra).is_file():
                shutil.copy2(template.directory / extra, paths.root / extra)
        paths.plan_dir.mkdir()
        shutil.copytree(bundled_dir("workspace_schema"), paths.plan_dir / SCHEMA_DIR)
        for directory in (paths.cert, paths.save, paths.logs, paths.data):
            directory.mkdir(exist_ok=True)
        dump_yaml(
            paths.plan, plan_document(template, network=network, rounds=rounds), schema="plan"
        )
        dump_yaml(paths.cols, {"collaborators": collaborators}, schema="cols")
        prepare = import_from_workspace(
            paths.root, template.prepare_data, field_name="prepare_data"
        )
        data = prepare(paths.data, list(collaborators))
        dump_yaml(paths.data_config, {"data": dict(data)}, schema="data")
        (paths.root / "requirements.txt").write_text(
            "".join(f"{line}\n" for line in template.requirements), encoding="utf-8"
        )
    except BaseException:
        shutil.rmtree(paths.root, ignore_errors=True)
        raise
    return paths
