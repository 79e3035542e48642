"""The templates fx ships: each a directory under templates/ with a template.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fx.errors import WorkspaceError
from fx.resources import bundled_dir

DEFAULT_TEMPLATE = "torch_cnn_digits"


@dataclass(frozen=True)
class Template:
    name: str
    directory: Path
    description: str
    runner: str
    prepare_data: str
    settings: dict[str, Any] = field(default_factory=dict)
    tasks: dict[str, Any] = field(default_factory=dict)
    best_metric: dict[str, Any] | None = None
    requirements: tuple[str, ...] = ()


def _load(directory: Path) -> Template:
    meta = yaml.safe_load((directory / "template.yaml").read_text(encoding="utf-8"))
    return Template(
        name=directory.name,
        directory=directory,
        description=meta["description"],
        runner=meta["runner"],
        prepare_data=meta["prepare_data"],
        settings=dict(meta.get("settings") or {}),
        tasks=dict(meta["tasks"]),
        best_metric=meta.get("best_metric"),
        requirements=tuple(meta.get("requirements") or ()),
    )


def available_templates() -> list[Template]:
    root = bundled_dir("templates")
    return [_load(d) for d in sorted(root.iterdir()) if (d / "template.yaml").is_file()]


def get_template(name: str) -> Template:
    templates = {template.name: template for template in available_templates()}
    if name not in templates:
        raise WorkspaceError(
            f"unknown template {name!r}",
            hint=f"choose one of: {', '.join(sorted(templates))} (see `fx workspace templates`)",
        )
    return templates[name]
