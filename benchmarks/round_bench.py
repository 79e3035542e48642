"""How close an fx round comes to the floor of moving its bytes.

For each configuration (model size x number of collaborators) this script

1. creates a workspace with the real CLI (``fx workspace create`` + ``fx pki
   certify``, timed: that is ``setup_s``) and puts a synthetic runner in its
   ``src/``: float32 weights of the requested size, ``train`` adds a constant;
2. runs a real federation: ``python -m fx aggregator start`` and N
   ``python -m fx collaborator start`` processes over mutual TLS on 127.0.0.1;
3. measures the floor in the same run: the same bytes through a bare gRPC
   stream with the same TLS credentials, chunk size and channel options (N
   concurrent downloads of the model, each followed by an upload of it, one
   process per client), plus one numpy averaging pass over N models.

Round time is the median, over the training rounds after the first, of the
time from one round opening to the next opening (the aggregator logs "round N
open"): download, trivial local work, upload and aggregation. Round 0 (process
start, TLS handshakes) and the final validate-only pass are left out. The
checkpoint of a round is written while the next one runs; the benchmark checks
that every round was checkpointed, and a disk slower than the rounds shows up
as longer rounds (the aggregator waits when it falls a round behind).
``first_download_ms`` is the median gap between the aggregator logging "round N
open" and logging the first model download of that round. Peak RSS comes from
the kernel (``ru_maxrss`` of each child, via ``os.wait4``).

    python benchmarks/round_bench.py --size-mb 100 --collaborators 4 --rounds 5
    python benchmarks/round_bench.py --size-mb 1 25 100 500 --collaborators 2 4 8
    python benchmarks/round_bench.py --quick

Each configuration ends with one line of ``key=value`` pairs (grep ``^summary``).
Sizes are in MiB (``size_mb=100`` is 100 x 2**20 bytes). See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

MIB = 1 << 20

SYNTHETIC_RUNNER = '''\
"""A runner with no data and trivial work, for benchmarks/round_bench.py."""

import numpy as np

from fx.collaborator.runner import TaskResult

# Largest tensor, in float32 elements (64 MiB): a model is many tensors, as in real nets.
_MAX_ELEMENTS = 16 << 20


def _layout(size_mb):
    total = max(1, int(float(size_mb) * (1 << 20)) // 4)
    shapes, index = {}, 0
    while total > 0:
        n = min(total, _MAX_ELEMENTS)
        shapes[f"layer{index}.weight"] = (n,)
        total -= n
        index += 1
    return shapes


class SyntheticRunner:
    def __init__(self, data_dir, settings, collaborator):
        self.settings = dict(settings)
        self.weights = self.initial_weights(self.settings)

    @classmethod
    def initial_weights(cls, settings):
        return {
            name: np.zeros(shape, dtype=np.float32)
            for name, shape in _layout(settings["size_mb"]).items()
        }

    def get_weights(self):
        return self.weights  # no copy: the collaborator only reads them

    def set_weights(self, weights):
        # Copies into its own arrays, as frameworks do (the torch template's
        # load_state_dict): the client then receives the next download into the
        # memory of this one instead of faulting in a fresh model every round.
        for name, array in weights.items():
            np.copyto(self.weights[name], array)

    def train(self, settings):
        for array in self.weights.values():
            array += np.float32(1.0)
        return TaskResult(sample_count=10, metrics={"loss": 1.0})

    def validate(self, settings):
        return TaskResult(sample_count=10, metrics={"accuracy": 0.5})
'''


@dataclass(frozen=True)
class FederationResult:
    round_times: list[float]
    first_download_ms: list[float]
    agg_rss_mb: float
    col_rss_mb: float


@dataclass(frozen=True)
class Summary:
    size_mb: float
    n: int
    rounds: int
    setup_s: float
    round_s: float
    floor_s: float
    first_download_ms: float
    agg_rss_mb: float
    col_rss_mb: float
    base_rss_mb: float
    floor_server_rss_mb: float
    load: float

    def line(self) -> str:
        fields = {
            "size_mb": f"{self.size_mb:g}",
            "n": str(self.n),
            "rounds": str(self.rounds),
            "round_s": f"{self.round_s:.3f}",
            "floor_s": f"{self.floor_s:.3f}",
            "ratio": f"{self.round_s / self.floor_s:.2f}",
            "overhead_ms": f"{(self.round_s - self.floor_s) * 1000:.0f}",
            "first_download_ms": f"{self.first_download_ms:.1f}",
            "agg_rss_mb": f"{self.agg_rss_mb:.0f}",
            "col_rss_mb": f"{self.col_rss_mb:.0f}",
            "base_rss_mb": f"{self.base_rss_mb:.0f}",
            "agg_model_x": f"{(self.agg_rss_mb - self.base_rss_mb) / self.size_mb:.2f}",
            "floor_server_rss_mb": f"{self.floor_server_rss_mb:.0f}",
            "setup_s": f"{self.setup_s:.2f}",
            "load": f"{self.load:.1f}",
        }
        return "summary " + " ".join(f"{k}={v}" for k, v in fields.items())


# -- the fx federation ----------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fx(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fx", *args], cwd=cwd, env=_env(), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"fx {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def create_workspace(parent: Path, *, size_mb: float, n: int, rounds: int) -> tuple[Path, float]:
    """A workspace for the synthetic model; also the seconds create + certify took."""
    import yaml

    started = time.perf_counter()
    _fx(
        "workspace",
        "create",
        "--template",
        "numpy_logreg_digits",
        "--prefix",
        "fed",
        "--collaborators",
        str(n),
        "--rounds",
        str(rounds),
        "--agg-addr",
        "127.0.0.1",
        "--agg-port",
        str(_free_port()),
        cwd=parent,
    )
    workspace = parent / "fed"
    _fx("pki", "certify", cwd=workspace)
    setup_s = time.perf_counter() - started

    (workspace / "src" / "synthetic_runner.py").write_text(SYNTHETIC_RUNNER)
    plan_path = workspace / "plan" / "plan.yaml"
    plan = yaml.safe_load(plan_path.read_text())
    plan["model"] = {
        "runner": "src.synthetic_runner:SyntheticRunner",
        "settings": {"size_mb": size_mb},
    }
    plan["aggregator"] |= {"linger_s": 2, "round_deadline_s": 600, "liveness_timeout_s": 60}
    plan["collaborator"] |= {"connect_timeout_s": 60}
    plan_path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return workspace, setup_s


def _wait_rusage(process: subprocess.Popen[bytes], deadline: float) -> tuple[int, float]:
    """Reap ``process``: (exit code, peak RSS in MiB)."""
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage.ru_maxrss / 1024  # KiB on Linux
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"{process.args} did not finish in time")
        time.sleep(0.05)


def _log_time(line: str) -> float:
    stamp = line[:23]  # "2025-01-31 12:00:00,123"
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _round_timeline(log_text: str) -> tuple[list[float], list[float]]:
    """From the aggregator's log: the seconds each training round after the first took
    (from "round r open" to "round r+1 open"), and the ms from each round opening to
    its first model download."""
    opened: dict[int, float] = {}
    first: dict[int, float] = {}
    for line in log_text.splitlines():
        if match := re.search(r"round (\d+) open", line):
            opened.setdefault(int(match[1]), _log_time(line))
        elif match := re.search(r"serving model v\d+ for round (\d+)", line):
            first.setdefault(int(match[1]), _log_time(line))
    rounds = sorted(opened)
    # The last "open" is the final validate-only pass; round 0 includes process start-up.
    durations = [opened[r + 1] - opened[r] for r in rounds[1:-1] if r + 1 in opened]
    gaps = [(first[r] - opened[r]) * 1000 for r in rounds[1:] if r in first]
    return durations, gaps


def run_federation(workspace: Path, n: int, *, rounds: int, timeout_s: float) -> FederationResult:
    logs = workspace / "bench-logs"
    logs.mkdir()
    deadline = time.monotonic() + timeout_s

    def start(*args: str, log: str) -> subprocess.Popen[bytes]:
        with (logs / log).open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "fx", *args],
                cwd=workspace,
                env=_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    aggregator = start("aggregator", "start", log="aggregator.out")
    names = [f"site-{i + 1}" for i in range(n)]
    collaborators = [
        start("collaborator", "start", "--name", name, log=f"{name}.out") for name in names
    ]
    try:
        col_rss = []
        for name, process in zip(names, collaborators, strict=True):
            code, rss = _wait_rusage(process, deadline)
            if code != 0:
                raise SystemExit(f"{name} exited {code}:\n{(logs / f'{name}.out').read_text()}")
            col_rss.append(rss)
        code, agg_rss = _wait_rusage(aggregator, deadline)
        if code != 0:
            raise SystemExit(f"aggregator exited {code}:\n{(logs / 'aggregator.out').read_text()}")
    finally:
        for process in [aggregator, *collaborators]:
            if process.returncode is None:
                process.kill()
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(process.pid, 0)

    with sqlite3.connect(workspace / "save" / "state.db") as db:
        (saved,) = db.execute("SELECT count(*) FROM rounds").fetchone()
    if saved != rounds + 1:
        raise SystemExit(f"expected {rounds + 1} checkpointed rounds, found {saved}")
    round_times, first = _round_timeline((workspace / "logs" / "aggregator.log").read_text())
    return FederationResult(round_times, first, agg_rss, max(col_rss))


# -- the floor: the same bytes through a bare gRPC stream ------------------------------

_SERVICE = "floor.Bytes"


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _chunks(size: int, chunk_bytes: int) -> list[bytes]:
    model = np.ones(size // 4, dtype=np.float32).view(np.uint8)
    return [bytes(model[i : i + chunk_bytes].data) for i in range(0, model.nbytes, chunk_bytes)]


def _floor_server(
    cert: dict[str, str], size: int, chunk_bytes: int, port: Any, stop: Any, peak_rss: Any
) -> None:
    import resource
    from concurrent import futures

    import grpc

    from fx.transport.grpc.credentials import server_credentials, server_options

    chunks = _chunks(size, chunk_bytes)

    def download(request: bytes, context: Any) -> Iterator[bytes]:
        yield from chunks

    def upload(parts: Iterator[bytes], context: Any) -> bytes:
        received = sum(len(part) for part in parts)
        return str(received).encode()

    handler = grpc.method_handlers_generic_handler(
        _SERVICE,
        {
            "Download": grpc.unary_stream_rpc_method_handler(download),
            "Upload": grpc.stream_unary_rpc_method_handler(upload),
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32), options=server_options(chunk_bytes, 30.0)
    )
    server.add_generic_rpc_handlers((handler,))
    credentials = server_credentials(
        _read(Path(cert["key"])), _read(Path(cert["cert"])), _read(Path(cert["chain"]))
    )
    port.value = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    stop.wait()
    server.stop(grace=1.0).wait()
    peak_rss.value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _floor_client(
    cert: dict[str, str], size: int, chunk_bytes: int, port: Any, repeats: int, barrier: Any
) -> None:
    import grpc

    from fx.transport.grpc.credentials import channel_credentials, channel_options

    chunks = _chunks(size, chunk_bytes)
    channel = grpc.secure_channel(
        f"127.0.0.1:{port.value}",
        channel_credentials(
            _read(Path(cert["key"])), _read(Path(cert["cert"])), _read(Path(cert["chain"]))
        ),
        options=channel_options(chunk_bytes, 30.0),
    )
    grpc.channel_ready_future(channel).result(timeout=30)
    download = channel.unary_stream(f"/{_SERVICE}/Download")
    upload = channel.stream_unary(f"/{_SERVICE}/Upload")
    for _ in range(repeats):
        barrier.wait()
        received = sum(len(message) for message in download(b""))
        assert received == sum(len(c) for c in chunks)
        upload(iter(chunks))
        barrier.wait()
    channel.close()


def _averaging_pass_s(size: int, n: int) -> float:
    """One pass averaging n models (each read once; the accumulator updated in place)."""
    model = np.ones(size // 4, dtype=np.float32)
    acc = np.empty_like(model)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        np.copyto(acc, model)
        for _ in range(n - 1):
            np.add(acc, model, out=acc)
        np.divide(acc, np.float32(n), out=acc)
        times.append(time.perf_counter() - started)
    return min(times)


@dataclass(frozen=True)
class Floor:
    seconds: float  # median transfer time + one averaging pass
    server_rss_mb: float  # peak RSS of the bare server (it holds one encoded model)


def measure_floor(workspace: Path, *, size: int, n: int, chunk_bytes: int, repeats: int) -> Floor:
    ctx = mp.get_context("spawn")
    certs = workspace / "cert"
    server_cert = {
        "key": str(certs / "server" / "aggregator.key"),
        "cert": str(certs / "server" / "aggregator.crt"),
        "chain": str(certs / "cert_chain.pem"),
    }
    port = ctx.Value("i", 0)
    peak_rss = ctx.Value("d", 0.0)
    stop = ctx.Event()
    server = ctx.Process(
        target=_floor_server, args=(server_cert, size, chunk_bytes, port, stop, peak_rss)
    )
    server.start()
    while port.value == 0:
        if not server.is_alive():
            raise SystemExit("the floor server failed to start")
        time.sleep(0.01)
    barrier = ctx.Barrier(n + 1)
    clients = []
    for i in range(n):
        client_cert = {
            "key": str(certs / "client" / f"site-{i + 1}.key"),
            "cert": str(certs / "client" / f"site-{i + 1}.crt"),
            "chain": str(certs / "cert_chain.pem"),
        }
        clients.append(
            ctx.Process(
                target=_floor_client,
                args=(client_cert, size, chunk_bytes, port, repeats, barrier),
            )
        )
    for client in clients:
        client.start()
    times = []
    try:
        for _ in range(repeats):
            barrier.wait(timeout=120)
            started = time.perf_counter()
            barrier.wait(timeout=600)
            times.append(time.perf_counter() - started)
    finally:
        for client in clients:
            client.join(timeout=30)
        stop.set()
        server.join(timeout=30)
    return Floor(statistics.median(times) + _averaging_pass_s(size, n), peak_rss.value)


def interpreter_rss_mb() -> float:
    """Peak RSS of a process that only imports what the aggregator imports."""
    code = (
        "import numpy, grpc, fx.cli.main, fx.aggregator.core, fx.transport.grpc.server, "
        "fx.algorithms.fedavg"
    )
    process = subprocess.Popen([sys.executable, "-c", code], env=_env())
    _, rss = _wait_rusage(process, time.monotonic() + 60)
    return rss


# -- driver -------------------------------------------------------------------------------


def bench(size_mb: float, n: int, rounds: int, base_rss_mb: float, keep: Path | None) -> Summary:
    with contextlib.ExitStack() as stack:
        if keep is None:
            parent = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fx-bench-")))
        else:
            parent = keep / f"size{size_mb:g}-n{n}"
            parent.mkdir(parents=True, exist_ok=False)
        workspace, setup_s = create_workspace(parent, size_mb=size_mb, n=n, rounds=rounds)
        size = int(size_mb * MIB) // 4 * 4
        load = os.getloadavg()[0]
        federation = run_federation(
            workspace, n, rounds=rounds, timeout_s=120 + rounds * n * size_mb / 5
        )
        floor = measure_floor(
            workspace, size=size, n=n, chunk_bytes=4 * MIB, repeats=max(5, rounds)
        )
    detail = {
        "round_times_s": [round(t, 3) for t in federation.round_times],
        "first_download_ms": [round(t, 1) for t in federation.first_download_ms],
    }
    print(f"detail size_mb={size_mb:g} n={n} {json.dumps(detail)}", flush=True)
    return Summary(
        size_mb=size_mb,
        n=n,
        rounds=rounds,
        setup_s=setup_s,
        round_s=statistics.median(federation.round_times),
        floor_s=floor.seconds,
        first_download_ms=statistics.median(federation.first_download_ms or [float("nan")]),
        agg_rss_mb=federation.agg_rss_mb,
        col_rss_mb=federation.col_rss_mb,
        base_rss_mb=base_rss_mb,
        floor_server_rss_mb=floor.server_rss_mb,
        load=load,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size-mb", type=float, nargs="+", default=[100.0], help="model sizes (MiB)"
    )
    parser.add_argument(
        "--collaborators", "-n", type=int, nargs="+", default=[2], help="numbers of collaborators"
    )
    parser.add_argument("--rounds", type=int, default=5, help="training rounds per run (>= 3)")
    parser.add_argument(
        "--quick", action="store_true", help="1 and 25 MiB, N=2, 3 rounds (a smoke run)"
    )
    parser.add_argument("--keep", type=Path, help="keep the workspaces under this directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mb, args.collaborators, args.rounds = [1.0, 25.0], [2], 3
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (round 0 and the final pass are not timed)")
    base = interpreter_rss_mb()
    for size_mb in args.size_mb:
        for n in args.collaborators:
            print(bench(size_mb, n, args.rounds, base, args.keep).line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
