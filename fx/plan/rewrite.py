"""Changing a YAML file people edit by hand, without losing what they wrote in it.

PyYAML reads plan files into plain dicts: writing one back drops every comment,
and `fx collaborator create` or `fx plan initialize` would erase the notes a
site keeps in plan.yaml or cols.yaml. Here the file is read with ruamel.yaml's
round trip instead, changed in place, and written back atomically: comments,
key order, quoting and the `$schema` line stay as they were; new keys go at
the end of their mapping.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from fx.pki.files import write_atomically

__all__ = ["rewrite_yaml"]


def rewrite_yaml(path: Path, change: Callable[[Any], Any]) -> None:
    """Write back ``path`` after ``change`` (given the file's mapping, with its comments,
    it returns the mapping to write: the same one changed in place, or a deep copy).

    The caller validates the result: this only keeps what the change leaves alone.
    """
    yaml = YAML()  # round trip: comments and layout are kept
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a user's long line
    document = change(yaml.load(path.read_text(encoding="utf-8")))
    out = io.StringIO()
    yaml.dump(document, out)
    write_atomically(path, out.getvalue().encode("utf-8"), secret=False)
