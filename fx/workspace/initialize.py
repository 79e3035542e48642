"""`fx plan initialize`: write the plan out in full, build the first global model, and
record what the federation will run.

The record is plan/federation.json, exported with the plan so every site can
see which model the federation starts from::

    {
      "fx_version": 1,
      "federation_id": "<sha256 of the canonical plan>",
      "template": "torch_cnn_digits",
      "model_runner": "src.runner:DigitsCNN",
      "aggregation": "fedavg",
      "rounds_to_train": 5,
      "init_model": {"path": "save/init.safetensors", "sha256": "<hex>",
                     "tensors": 12, "parameters": 11274, "bytes": 45160}
    }

save/init.safetensors carries the same federation id, template and runner in its
``__metadata__`` (keys ``fx.federation_id``, ``fx.template``, ``fx.model_runner``);
`fx aggregator start` starts from that file when it exists.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fx.errors import PlanError
from fx.plan.effective import effective_document
from fx.plan.validate import ValidatedWorkspace, validate_workspace
from fx.workspace.paths import WorkspacePaths

FEDERATION_RECORD = "federation.json"
"""File name of the record, inside plan/."""

RECORD_VERSION = 1


def record_path(paths: WorkspacePaths) -> Path:
    return paths.plan_dir / FEDERATION_RECORD


@dataclass(frozen=True)
class InitModel:
    """The first global model as written to save/init.safetensors."""

    path: str
    sha256: str
    tensors: int
    parameters: int
    bytes: int


@dataclass(frozen=True)
class FederationRecord:
    """What a federation runs: its id (the plan hash), code, and first model."""

    federation_id: str
    template: str
    model_runner: str
    aggregation: str
    rounds_to_train: int
    init_model: InitModel
    fx_version: int = RECORD_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: Path) -> FederationRecord:
        try:
            raw: dict[str, Any] = json.loads(text)
            return cls(**{**raw, "init_model": InitModel(**raw["init_model"])})
        except (ValueError, TypeError, KeyError) as exc:
            raise PlanError(
                f"{source}: not a federation record ({exc})",
                hint="run `fx plan initialize` to write it again",
            ) from None


@dataclass(frozen=True)
class Initialized:
    """What `fx plan initialize` did."""

    record: FederationRecord
    workspace: ValidatedWorkspace
    defaulted: tuple[str, ...]
    """Keys plan.yaml left out, now written with their defaults (the id changed)."""


def initialize(paths: WorkspacePaths) -> Initialized:
    """Validate the plan files, write plan.yaml in full, save the initial model, and
    write plan/federation.json. PlanError (listing every problem) if the plan is invalid.
    """
    from fx.collaborator.runner import build_initial_weights
    from fx.pki.files import write_atomically
    from fx.plan.rewrite import rewrite_yaml
    from fx.tensors.safetensors_io import save_tensors

    workspace = validate_workspace(paths)
    effective = effective_document(workspace.plan.document)
    if effective.defaulted:
        # Filled into the file as written, so that a site's comments in it stay.
        rewrite_yaml(paths.plan, lambda document: effective_document(document).document)
        workspace = validate_workspace(paths, import_code=False)
    plan = workspace.plan

    weights = build_initial_weights(paths.root, plan.model.runner, plan.model.settings)
    paths.save.mkdir(parents=True, exist_ok=True)
    save_tensors(
        paths.init_model,
        weights,
        metadata={
            "fx.federation_id": plan.federation_id,
            "fx.template": plan.template,
            "fx.model_runner": plan.model.runner,
        },
    )
    record = FederationRecord(
        federation_id=plan.federation_id,
        template=plan.template,
        model_runner=plan.model.runner,
        aggregation=plan.aggregator.aggregation,
        rounds_to_train=plan.aggregator.rounds_to_train,
        init_model=InitModel(
            path=paths.init_model.relative_to(paths.root).as_posix(),
            sha256=file_sha256(paths.init_model),
            tensors=len(weights),
            parameters=sum(int(array.size) for array in weights.values()),
            bytes=sum(int(array.nbytes) for array in weights.values()),
        ),
    )
    write_atomically(record_path(paths), record.to_json().encode("utf-8"), secret=False)
    return Initialized(record, workspace, effective.defaulted)


def read_record(paths: WorkspacePaths) -> FederationRecord | None:
    """plan/federation.json, or None if `fx plan initialize` has not written one."""
    path = record_path(paths)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return FederationRecord.from_json(text, path)


def stale_record_warning(paths: WorkspacePaths, federation_id: str) -> str | None:
    """Why plan/federation.json no longer describes the plan, or None when it does."""
    record = read_record(paths)
    if record is None or record.federation_id == federation_id:
        return None
    return (
        f"{record_path(paths)} records federation {record.federation_id[:12]}, but plan.yaml "
        f"is now federation {federation_id[:12]}: {paths.init_model.name} may not fit "
        "model.settings; run `fx plan initialize` again"
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
