"""`fx collaborator create`: add a collaborator to plan/cols.yaml and plan/data.yaml.

Neither file is part of the plan hash, so adding a collaborator leaves the
federation id as it is; the aggregator reads cols.yaml when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fx.errors import PlanError
from fx.plan.documents import read_yaml, validate_document
from fx.workspace.paths import WorkspacePaths

_NAME_RULE = "1-63 lowercase letters, digits and '-', not starting or ending with '-'"


@dataclass(frozen=True)
class AddedCollaborator:
    name: str
    data: str
    """The data path as written in data.yaml (relative to the workspace, or absolute)."""
    data_exists: bool
    collaborators: tuple[str, ...]


def check_new_name(name: str, existing: list[str], *, cols: Path) -> None:
    """PlanError unless ``name`` is a safe identity name that no collaborator has yet."""
    from fx.pki.names import AGGREGATOR_NAME, is_identity_name

    if not is_identity_name(name):
        raise PlanError(
            f"{cols}: collaborators: {name!r} is not a valid collaborator name",
            hint=f"use {_NAME_RULE} (it becomes the identity in the certificate)",
        )
    if name == AGGREGATOR_NAME:
        raise PlanError(
            f"{cols}: collaborators: {name!r} is reserved for the aggregator's certificate",
            hint="choose another name",
        )
    if name in existing:
        raise PlanError(
            f"{cols}: collaborators: {name!r} is already a collaborator",
            hint=f"choose a name not in: {', '.join(existing)}",
        )


def add_collaborator(
    paths: WorkspacePaths, name: str, *, data: str | None = None
) -> AddedCollaborator:
    """Append ``name`` to cols.yaml and give it a data path in data.yaml.

    ``data`` defaults to an entry data.yaml already has for ``name``, else
    ``data/<name>``; a relative path is relative to the workspace. Both files are
    validated before and after; on error neither is changed.
    """
    from fx.plan.rewrite import rewrite_yaml

    cols_document = read_yaml(paths.cols)
    validate_document(cols_document, "cols", paths.cols)
    data_document = read_yaml(paths.data_config)
    validate_document(data_document, "data", paths.data_config)
    names: list[str] = list(cols_document["collaborators"])
    check_new_name(name, names, cols=paths.cols)
    entries: dict[str, str] = dict(data_document["data"])
    if data is not None and not data.strip():
        raise PlanError(
            f"{paths.data_config}: data.{name}: the data path is empty",
            hint="pass --data DIR, the directory that holds this collaborator's data",
        )
    chosen = data if data is not None else entries.get(name, f"data/{name}")

    new_cols = {**cols_document, "collaborators": [*names, name]}
    new_data = {**data_document, "data": {**entries, name: chosen}}
    validate_document(new_cols, "cols", paths.cols)
    validate_document(new_data, "data", paths.data_config)

    def add_name(document: Any) -> Any:
        document["collaborators"].append(name)
        return document

    def add_data(document: Any) -> Any:
        document["data"][name] = chosen
        return document

    # The files are changed, not rewritten: a site's comments in them stay.
    rewrite_yaml(paths.cols, add_name)
    rewrite_yaml(paths.data_config, add_data)
    return AddedCollaborator(
        name=name,
        data=chosen,
        data_exists=(paths.root / chosen).is_dir(),
        collaborators=tuple(new_cols["collaborators"]),
    )
