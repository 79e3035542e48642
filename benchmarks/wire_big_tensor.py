"""One tensor larger than 2 GiB through fx's real gRPC streams (mutual TLS, 127.0.0.1).

    python benchmarks/wire_big_tensor.py                    # 3 GiB down (GetModel) and up
    python benchmarks/wire_big_tensor.py --gib 2.1 --download-only

The aggregator runs in this process with a one-tensor float32 model and one
collaborator. The collaborator downloads the model (GetModel, server-streaming
chunks), checks every byte, and uploads it as its training result
(SendLocalTaskResults, client-streaming chunks); the round closes, and the new
global model (the FedAvg of that single update) is checked byte for byte too.
Exits non-zero on any difference and prints the throughput of each direction.

Memory: about 5x the tensor with the upload (the model, its encoded download
stream, the downloaded copy, the assembled upload and the FedAvg accumulator),
3x without. CI runs the 2.1 GiB download (tests/integration/test_protocol.py);
the 3 GiB round trip needs about 16 GiB free, so it is run by hand.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fx.aggregator.admission import Admission  # noqa: E402
from fx.aggregator.core import Aggregator  # noqa: E402
from fx.aggregator.store import ModelStore  # noqa: E402
from fx.algorithms.registry import resolve_aggregation  # noqa: E402
from fx.pki.crl import RevocationList  # noqa: E402
from fx.pki.workspace import (  # noqa: E402
    certify_workspace,
    require_aggregator_credentials,
    require_collaborator_credentials,
)
from fx.plan.loader import load_plan  # noqa: E402
from fx.transport.api import TaskReport  # noqa: E402
from fx.transport.grpc.client import ClientSettings, GrpcAggregatorClient  # noqa: E402
from fx.transport.grpc.credentials import server_credentials  # noqa: E402
from fx.transport.grpc.server import AggregatorServicer, run_server  # noqa: E402
from fx.workspace.create import NetworkChoice, create_workspace  # noqa: E402
from fx.workspace.templates import get_template  # noqa: E402

MiB = 1 << 20
# Values 0..1008 repeating: exact in float32, and a period no chunk size divides,
# so a chunk placed at the wrong offset cannot go unnoticed.
PERIOD = 1009
BLOCK = np.tile(np.arange(PERIOD, dtype=np.float32), (4 * MiB) // PERIOD)


def patterned(count: int) -> NDArray[np.float32]:
    array = np.empty(count, dtype=np.float32)
    for start in range(0, count, BLOCK.size):
        piece = array[start : start + BLOCK.size]
        piece[:] = BLOCK[: piece.size]
    return array


def differs_from_pattern(array: NDArray[Any]) -> bool:
    flat = array.reshape(-1)
    for start in range(0, flat.size, BLOCK.size):
        piece = flat[start : start + BLOCK.size]
        if not np.array_equal(piece, BLOCK[: piece.size]):
            return True
    return False


def throughput(what: str, size: int, seconds: float) -> str:
    return f"{what:<8} {size / (1 << 30):.2f} GiB: {seconds:.1f}s, {size / MiB / seconds:.0f} MiB/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=3.0, help="tensor size in GiB (> 2)")
    parser.add_argument("--chunk-mib", type=float, default=4.0)
    parser.add_argument("--download-only", action="store_true")
    args = parser.parse_args(argv)
    count = int(args.gib * (1 << 30)) // 4
    size = count * 4
    chunk_bytes = int(args.chunk_mib * MiB)

    with tempfile.TemporaryDirectory() as tmp:
        paths = create_workspace(
            get_template("numpy_logreg_digits"),
            Path(tmp) / "ws",
            collaborators=["site-1"],
            network=NetworkChoice("localhost", 50051),  # not used: we bind port 0
            rounds=1,
        )
        certify_workspace(paths, aggregator_hosts=["localhost"], collaborators=["site-1"])
        plan = load_plan(paths)
        aggregator = Aggregator(
            plan=plan,
            collaborators=["site-1"],
            initial_model={"huge": patterned(count)},
            aggregation=resolve_aggregation("fedavg"),
            store=ModelStore(paths.save),
        )
        admission = Admission(
            collaborators=["site-1"],
            federation_id=plan.federation_id,
            is_revoked=RevocationList(paths.crl).is_revoked,
        )
        servicer = AggregatorServicer(aggregator, chunk_bytes=chunk_bytes)
        try:
            with run_server(
                servicer,
                admission=admission,
                host="127.0.0.1",
                port=0,
                credentials=server_credentials(*require_aggregator_credentials(paths)),
                chunk_bytes=chunk_bytes,
                keepalive_s=30,
                max_workers=4,
            ) as port:
                settings = ClientSettings(
                    target=f"127.0.0.1:{port}",
                    name="site-1",
                    federation_id=plan.federation_id,
                    chunk_bytes=chunk_bytes,
                    keepalive_s=30,
                    connect_timeout_s=30,
                    retry_max_backoff_s=1,
                )
                tls = require_collaborator_credentials(paths, "site-1")
                client = GrpcAggregatorClient(settings, tls=tls)
                started = time.monotonic()
                received = client.get_model(0)["huge"]
                took = time.monotonic() - started
                print(throughput("download", size, took))
                if received.dtype != np.float32 or received.shape != (count,):
                    print(f"FAIL: got {received.dtype}{list(received.shape)}")
                    return 1
                if differs_from_pattern(received):
                    print("FAIL: the downloaded tensor differs")
                    return 1
                if args.download_only:
                    client.close()
                    return 0
                client.send_results(TaskReport(0, "validate", 1, {"accuracy": 1.0}))
                started = time.monotonic()
                ack = client.send_results(TaskReport(0, "train", 1, {}, {"huge": received}))
                took = time.monotonic() - started
                del received
                client.close()
                print(throughput("upload", size, took))
                if not ack.accepted:
                    print(f"FAIL: upload refused: {ack.reason}")
                    return 1
                model = aggregator.global_model()
                if model.version != 1 or differs_from_pattern(model.tensors["huge"]):
                    print("FAIL: the aggregated model differs from the uploaded tensor")
                    return 1
        finally:
            aggregator.close()
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
