"""tune_malloc: a model's worth of 4 MiB buffers, freed and allocated again every round,
is served from memory the process keeps instead of pages faulted in afresh."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None,
    reason="tunes glibc's malloc on Linux only",
)

# Five "rounds" of 25 x 4 MiB buffers (a 100 MB model in gRPC messages), each one
# filled (bytearray zeroes it) and freed; prints what was applied and the page faults.
_CHURN = """
import json, resource, sys
from fx.process import tune_malloc
applied = tune_malloc() if sys.argv[1] == "tuned" else {}
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    buffers = [bytearray(4 << 20) for _ in range(25)]
    del buffers
print(json.dumps([applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before]))
"""


def _churn(mode: str, **env: str) -> tuple[dict[str, bool], int]:
    variables = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    }
    out = subprocess.run(
        [sys.executable, "-c", _CHURN, mode],
        env=variables | env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    applied, faults = json.loads(out)
    return applied, faults


def test_buffers_freed_in_one_round_are_reused_in_the_next() -> None:
    _, plain = _churn("plain")
    applied, tuned = _churn("tuned")
    assert all(applied.values()), applied
    page = os.sysconf("SC_PAGE_SIZE")
    one_round = 25 * (4 << 20) // page
    # glibc's defaults give the memory back after every round: five rounds of faults.
    assert plain > 4 * one_round, (plain, one_round)
    # Tuned, only the first round faults its pages in.
    assert tuned < 2 * one_round, (tuned, one_round)


def test_an_operators_malloc_variables_win() -> None:
    applied, faults = _churn("tuned", MALLOC_TRIM_THRESHOLD_="1000000")
    assert applied == {
        "MALLOC_ARENA_MAX": True,
        "MALLOC_MMAP_THRESHOLD_": True,
        "MALLOC_TRIM_THRESHOLD_": False,
    }
    page = os.sysconf("SC_PAGE_SIZE")
    assert faults > 4 * 25 * (4 << 20) // page  # a 1 MB trim threshold: memory given back
