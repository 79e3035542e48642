"""Run the real `fx` command as separate processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

FX = [sys.executable, "-m", "fx"]


def fx_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"  # rich wraps long lines at 80 without a TTY
    return env


def fx(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one fx command to completion."""
    return subprocess.run(
        [*FX, *args], cwd=cwd, env=fx_env(), capture_output=True, text=True, timeout=timeout
    )


def fx_start(*args: str, cwd: Path, log: Path) -> subprocess.Popen[str]:
    """Start a long-running fx command; stdout+stderr go to ``log``."""
    with log.open("w") as stream:  # the child keeps its own descriptor
        return subprocess.Popen(
            [*FX, *args], cwd=cwd, env=fx_env(), stdout=stream, stderr=subprocess.STDOUT, text=True
        )


def finish(process: subprocess.Popen[str], log: Path, timeout: float = 240) -> tuple[int, str]:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"{process.args} did not finish:\n{log.read_text()}") from None
    return code, log.read_text()


def wait_for(log: Path, pattern: str, timeout: float = 60) -> None:
    """Until ``pattern`` (a regex) appears in the output a process writes to ``log``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and re.search(pattern, log.read_text()):
            return
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} never appeared in {log}:\n{log.read_text()}")


def finish_ok(process: subprocess.Popen[str], log: Path, timeout: float = 240) -> str:
    """Wait for ``process`` and require exit code 0; returns its output."""
    code, output = finish(process, log, timeout)
    assert code == 0, output
    return output


def kill_survivors(*processes: subprocess.Popen[str]) -> None:
    """Clean-up for a test that failed half-way: no process outlives it."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def start_collaborators(
    workspace: Path, logs: Path, names: tuple[str, ...] = ("site-1", "site-2"), suffix: str = ""
) -> dict[str, subprocess.Popen[str]]:
    """`fx collaborator start --name NAME` for each name; output in logs/NAME{suffix}.log."""
    return {
        name: fx_start(
            "collaborator", "start", "--name", name, cwd=workspace, log=logs / f"{name}{suffix}.log"
        )
        for name in names
    }
