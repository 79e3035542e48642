"""Local data for this workspace: read a collaborator's shard, or write the demo shards.

A shard is a directory holding two files, ``train.npz`` and ``valid.npz``. Each is a
NumPy archive (``numpy.savez``) with two arrays:

    x   float array, one sample per row: shape (N, ...) e.g. (N, 8, 8) or (N, 64)
    y   integer class labels, shape (N,), values in 0 .. num_classes - 1

Put your own data in that format under ``data/<collaborator>/`` (the path
``plan/data.yaml`` names for the collaborator) and the runner trains on it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

SPLITS = ("train", "valid")

EXPECTED_FORMAT = (
    "an .npz archive (numpy.savez) with arrays 'x' (float, shape (N, ...)) "
    "and 'y' (integer labels, shape (N,))"
)


def load_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``data_dir/<split>.npz`` as ``(x float32, y int64)``, checking its format.

    Raises ``FileNotFoundError`` when the file is missing and ``ValueError`` when it
    is not an archive of the documented shape; both name the file and the format.
    """
    path = Path(data_dir) / f"{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected {EXPECTED_FORMAT}")
    try:
        # allow_pickle=False: a data file must never be able to run code.
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an archive")
        with loaded as archive:
            found = list(archive.files)
            arrays = {key: archive[key] for key in ("x", "y") if key in found}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        # np.load raises ValueError for bytes that are not an archive and for pickled arrays.
        raise ValueError(f"{path}: cannot be read ({exc}); expected {EXPECTED_FORMAT}") from exc
    if len(arrays) != 2:
        raise ValueError(
            f"{path}: has arrays {sorted(found)}, needs 'x' and 'y'; expected {EXPECTED_FORMAT}"
        )
    x, y = arrays["x"], arrays["y"]

    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(
            f"{path}: 'x' has shape {x.shape}; expected at least one sample, {EXPECTED_FORMAT}"
        )
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{path}: 'x' has dtype {x.dtype}; expected {EXPECTED_FORMAT}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{path}: 'y' has shape {y.shape} and dtype {y.dtype}; expected {EXPECTED_FORMAT}"
        )
    if len(y) != len(x):
        raise ValueError(f"{path}: 'x' has {len(x)} samples but 'y' has {len(y)}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"{path}: 'x' holds NaN or Inf values")
    return x, y.astype(np.int64, copy=False)


def check_labels(path: Path, y: np.ndarray, num_classes: int) -> None:
    """Raise ``ValueError`` unless every label is a class index below ``num_classes``."""
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"{path}: labels range {y.min()}..{y.max()}, but the model has "
            f"num_classes={num_classes} (labels must be 0..{num_classes - 1}); "
            "change model.settings.num_classes in plan/plan.yaml"
        )


def prepare_shards(
    data_dir: Path, collaborators: list[str], seed: int = 0, valid_fraction: float = 0.2
) -> dict[str, str]:
    """Write one disjoint shard of scikit-learn's bundled digits per collaborator.

    The 1,797 8x8 digit images (scaled to [0, 1]) are shuffled with ``seed``, cut
    into ``len(collaborators)`` disjoint parts, and each part is split into
    ``data_dir/<name>/train.npz`` and ``valid.npz``. Returns ``{name: "data/<name>"}``,
    the shard paths relative to the workspace root, for ``plan/data.yaml``.
    """
    # Imported here: only `fx workspace create` needs scikit-learn, not the runner.
    from sklearn.datasets import load_digits

    names = list(collaborators)
    if not names:
        raise ValueError("prepare_shards needs at least one collaborator")
    if len(set(names)) != len(names):
        raise ValueError(f"collaborator names must be unique, got {names}")
    for name in names:
        if not name or name in {".", ".."} or "/" in name or "\\" in name:
            raise ValueError(f"collaborator name {name!r} cannot be used as a directory name")

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8), pixel values 0..16
    y = digits.target.astype(np.int64)
    min_per_shard = 20
    if len(names) * min_per_shard > len(y):
        raise ValueError(
            f"{len(names)} collaborators is too many for the {len(y)} digits samples "
            f"(each shard needs at least {min_per_shard})"
        )

    order = np.random.default_rng(seed).permutation(len(y))
    shards: dict[str, str] = {}
    for name, part in zip(names, np.array_split(order, len(names)), strict=True):
        n_valid = max(1, round(len(part) * valid_fraction))
        shard_dir = Path(data_dir) / name
        shard_dir.mkdir(parents=True, exist_ok=True)
        for split, rows in (("train", part[n_valid:]), ("valid", part[:n_valid])):
            np.savez(shard_dir / f"{split}.npz", x=x[rows], y=y[rows])
        shards[name] = f"data/{name}"
    return shards
