"""Shared fixtures: workspaces made by the real `fx workspace create` code."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port nobody listens on right now (bound and released on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def _isolate_workspace_imports() -> Iterator[None]:
    """Each workspace's code is the package `src`; never let one test see another's."""
    before = set(sys.modules)
    path_before = list(sys.path)
    yield
    for name in set(sys.modules) - before:
        if name == "src" or name.startswith("src."):
            del sys.modules[name]
    sys.path[:] = path_before
