"""Locate the data fx ships beside its code: templates/ and workspace_schema/.

In a wheel they are bundled under fx/_bundled/; in a source checkout (or an
editable install) they sit at the repository root.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def bundled_dir(name: str) -> Path:
    """The directory ``name`` ("templates" or "workspace_schema")."""
    for candidate in (_PACKAGE_DIR / "_bundled" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"fx installation is incomplete: no {name}/ directory found")


def schema_path(name: str) -> Path:
    """Path of a JSON Schema file, e.g. ``schema_path("plan")``."""
    return bundled_dir("workspace_schema") / f"{name}.schema.json"
