"""The aggregator's RPCs over real gRPC and mutual TLS on 127.0.0.1: every dtype and
any tensor size through the chunked streams, uploads deduplicated across a dropped
connection, events, metrics, trained models, status and the health service."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from numpy.typing import NDArray

from fx.aggregator.core import Aggregator
from fx.errors import RefusedError
from fx.metrics import MetricRecord
from fx.notify.events import Event
from fx.pki.workspace import require_collaborator_credentials
from fx.tensors.dtypes import DTYPE_NAMES, FLOAT_DTYPE_NAMES, dtype_from_name
from fx.transport.api import RoundClosedError, SubmitAck, TaskReport
from fx.transport.grpc import metadata
from fx.transport.grpc.client import GrpcAggregatorClient
from fx.transport.grpc.credentials import channel_credentials
from tests.integration.served import COLLABORATORS, Served, certified_workspace, serve
from tests.samples import available_ram

pytestmark = pytest.mark.integration

MiB = 1 << 20
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def every_dtype_model(seed: int, steps: int) -> dict[str, NDArray[Any]]:
    """Finite values of every dtype fx moves, as matrix, scalar and empty tensor,
    plus a BatchNorm-style int64 step counter too large for a float64 to hold exactly."""
    rng = np.random.default_rng(seed)
    model: dict[str, NDArray[Any]] = {}
    for name in DTYPE_NAMES:
        dtype = dtype_from_name(name)
        if name == "bool":
            values = rng.integers(0, 2, size=(7, 5)).astype(np.bool_)
        elif name in FLOAT_DTYPE_NAMES:
            values = rng.normal(size=(7, 5)).astype(dtype)
        else:
            values = rng.integers(0 if name == "uint8" else -100, 100, size=(7, 5)).astype(dtype)
        model[f"{name}.matrix"] = values
        model[f"{name}.scalar"] = np.array(values.flat[0], dtype=dtype)
        model[f"{name}.empty"] = np.zeros((0, 3), dtype=dtype)
    model["bn.num_batches_tracked"] = np.array(steps, dtype=np.int64)
    return model


def assert_bit_exact(got: dict[str, NDArray[Any]], want: Any) -> None:
    assert list(got) == list(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype, name
        assert got[name].shape == array.shape, name
        assert got[name].tobytes() == array.tobytes(), name


def play_round(served: Served, updates: dict[str, dict[str, NDArray[Any]] | None]) -> None:
    """Each collaborator asks for its tasks and reports them (train: ``updates[name]``)."""
    for name, update in updates.items():
        client = served.client(name)
        try:
            assignment = client.get_tasks(wait_s=0)
            for task in assignment.tasks:
                weights = update if task.kind == "train" else None
                report = TaskReport(assignment.round, task.name, 1, {"accuracy": 0.5}, weights)
                assert client.send_results(report).accepted
        finally:
            client.close()


def test_every_dtype_round_trips_and_integers_average_exactly(tmp_path: Path) -> None:
    steps = 2**60  # float64 cannot tell 2**60 + 2 from 2**60
    model = every_dtype_model(seed=0, steps=steps)
    # 5-byte chunks: every tensor wider than a byte is split mid-item.
    with serve(certified_workspace(tmp_path / "ws"), model=model, chunk_bytes=5) as served:
        client = served.client()
        assert_bit_exact(client.get_model(0), model)
        play_round(
            served,
            {
                "site-1": every_dtype_model(seed=1, steps=steps + 1),
                "site-2": every_dtype_model(seed=2, steps=steps + 3),
            },
        )
        new = served.aggregator.global_model().tensors
        for name, array in model.items():
            assert new[name].dtype == array.dtype, f"{name} was cast to {new[name].dtype}"
        assert int(new["bn.num_batches_tracked"]) == steps + 2
        assert new["bfloat16.matrix"].dtype == np.dtype(ml_dtypes.bfloat16)
        downloaded = client.get_model(1)
        assert_bit_exact(downloaded, new)
        assert_bit_exact(client.get_trained_model()[1], new)
        tensor = client.get_aggregated_tensor("bn.num_batches_tracked")
        assert tensor.dtype == np.int64 and int(tensor) == steps + 2
        client.close()


def test_a_tensor_far_over_the_grpc_message_cap_streams_both_ways(tmp_path: Path) -> None:
    """With 1 MiB chunks gRPC refuses any message over 2 MiB; one 40 MiB tensor still
    travels, down (GetModel, GetAggregatedTensor, GetTrainedModel) and up."""
    big = np.arange(20 * MiB, dtype=np.float16)  # 40 MiB, one tensor
    model = {"big": big, "steps": np.array(7, np.int64)}
    with serve(certified_workspace(tmp_path / "ws"), model=model, chunk_bytes=MiB) as served:
        client = served.client()
        assert_bit_exact(client.get_model(0), model)
        assert_bit_exact({"big": client.get_aggregated_tensor("big")}, {"big": big})
        update = {"big": np.ones_like(big), "steps": np.array(9, np.int64)}
        play_round(served, {"site-1": update, "site-2": update})
        uuid_, last = client.get_trained_model()
        assert uuid_ == served.aggregator.global_model().uuid
        assert last["big"].dtype == np.float16 and np.all(last["big"] == 1)
        assert int(last["steps"]) == 9
        client.close()


@pytest.mark.slow
@pytest.mark.skipif(available_ram() < 10 << 30, reason="needs 10 GiB of available RAM")
def test_a_single_tensor_over_2_gib_downloads_over_grpc() -> None:
    """About 15 s and 7 GiB (the model, its encoded stream, the received copy), in a
    child process so that this one's memory stays small. The 3 GiB round trip,
    upload included, is the same script without --download-only (see benchmarks/)."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "wire_big_tensor.py"), "--gib", "2.1", "--download-only"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "download 2.10 GiB" in result.stdout


class DroppingProxy:
    """A TCP relay 127.0.0.1:port -> 127.0.0.1:target that can cut every connection."""

    def __init__(self, target: int) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self._sockets += [downstream, upstream]
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()
        self.drop_all()


class DropsTheFirstAck(Aggregator):
    """Accepts the first train upload, then cuts the connection before the answer leaves."""

    proxy: DroppingProxy | None = None
    accepted_uploads = 0

    def submit(self, collaborator: str, report: TaskReport) -> SubmitAck:
        ack = super().submit(collaborator, report)
        if report.task == "train" and ack.accepted and not ack.duplicate:
            self.accepted_uploads += 1
            if self.accepted_uploads == 1 and self.proxy is not None:
                self.proxy.drop_all()
        return ack


def test_an_upload_retried_after_a_dropped_connection_is_counted_once(tmp_path: Path) -> None:
    paths = certified_workspace(tmp_path / "ws", rounds=1)
    with serve(paths, aggregator_class=DropsTheFirstAck) as served:
        aggregator = served.aggregator
        assert isinstance(aggregator, DropsTheFirstAck)
        proxy = aggregator.proxy = DroppingProxy(served.port)
        reference = aggregator.global_model().tensors
        ones = {k: np.ones_like(v) for k, v in reference.items()}
        threes = {k: np.full_like(v, 3.0) for k, v in reference.items()}
        try:
            client = served.client("site-1", port=proxy.port)
            assert client.send_results(TaskReport(0, "validate", 10, {"accuracy": 0.5})).accepted
            ack = client.send_results(TaskReport(0, "train", 10, {}, ones))
            client.close()
        finally:
            proxy.close()
        # The first answer was lost with the connection; the client sent the upload
        # again on a new one, and the aggregator recognised it.
        assert ack.accepted and ack.duplicate
        assert aggregator.accepted_uploads == 1
        other = served.client("site-2")
        assert other.send_results(TaskReport(0, "validate", 10, {"accuracy": 0.5})).accepted
        assert other.send_results(TaskReport(0, "train", 10, {}, threes)).accepted
        other.close()
        assert aggregator.round == 1
        for tensor in aggregator.global_model().tensors.values():
            np.testing.assert_allclose(tensor, 2.0)  # (1*10 + 3*10) / 20: counted once


def _collect(stream: Any, into: list[Any]) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.extend(stream), daemon=True)
    thread.start()
    return thread


def test_subscribe_metric_stream_and_trained_models_follow_a_federation(tmp_path: Path) -> None:
    rounds = 2
    with serve(certified_workspace(tmp_path / "ws", rounds=rounds)) as served:
        watcher = served.client("site-2")
        live: list[Event] = []
        metrics: list[MetricRecord] = []
        live_thread = _collect(watcher.subscribe(), live)
        metric_thread = _collect(watcher.metric_stream(replay=True), metrics)
        with pytest.raises(LookupError, match="no best model yet"):
            watcher.get_trained_model(best=True)

        reference = served.aggregator.global_model().tensors
        for value in range(rounds):
            update = {k: np.full_like(v, float(value)) for k, v in reference.items()}
            play_round(served, {"site-1": update, "site-2": update})
        best_uuid, best = watcher.get_trained_model(best=True)
        play_round(served, {"site-1": None, "site-2": None})  # the validate-only test round
        assert served.aggregator.done
        late: list[Event] = list(_take(watcher.subscribe(replay=True), 5))
        final_uuid = served.aggregator.global_model().uuid
    live_thread.join(5)
    metric_thread.join(5)
    watcher.close()

    expected = ["TRAINING_START", "UPDATE_ROUND_START", "UPDATE_ROUND_START", "MODEL_TEST_ROUND"]
    assert [e.notification_type for e in late] == [*expected, "TRAINING_FINISHED"]
    # A live subscriber, connected after round 0 opened, sees everything after that.
    assert live == late[2:]
    assert late[-1].body == {"global_model_uuid": final_uuid}
    assert [e.body.get("round") for e in late] == [None, 0, 1, 2, None]
    assert {e.training_uuid for e in late} == {served.aggregator.training_uuid}
    for event in late:
        uuid.UUID(event.body["global_model_uuid"])

    assert set(best) == set(reference)
    uuid.UUID(best_uuid)
    per_round = {(r.round, r.source) for r in metrics if r.name == "accuracy"}
    assert per_round == {(r, s) for r in range(rounds + 1) for s in ("aggregator", *COLLABORATORS)}


def _take(stream: Any, count: int) -> Iterator[Any]:
    for index, item in enumerate(stream):
        yield item
        if index + 1 == count:
            stream.close()
            return


def test_get_aggregated_tensor_names_what_is_wrong(tmp_path: Path) -> None:
    with serve(certified_workspace(tmp_path / "ws")) as served:
        client = served.client()
        name, array = next(iter(served.aggregator.global_model().tensors.items()))
        current = served.aggregator.global_model().uuid
        np.testing.assert_array_equal(client.get_aggregated_tensor(name, model_uuid=current), array)
        with pytest.raises(LookupError, match="no tensor 'nope'"):
            client.get_aggregated_tensor("nope")
        with pytest.raises(RoundClosedError, match="no longer the global model"):
            client.get_aggregated_tensor(name, model_uuid=str(uuid.uuid4()))
        client.close()


def test_status_says_who_is_connected_and_who_has_reported(tmp_path: Path) -> None:
    with serve(certified_workspace(tmp_path / "ws")) as served:
        operator = served.client("site-2")
        before = operator.status()
        assert before.round == 0 and not before.final and not before.done
        assert before.tasks == ("validate", "train")
        # Asking for the status is not a sign of life of the borrowed identity.
        assert [(c.name, c.connected, c.last_seen_s) for c in before.collaborators] == [
            ("site-1", False, None),
            ("site-2", False, None),
        ]
        site1 = served.client("site-1")
        site1.send_results(TaskReport(0, "validate", 10, {"accuracy": 0.5}))
        after = operator.status()
        first, second = after.collaborators
        assert first.connected and first.last_seen_s is not None and first.last_seen_s < 5
        assert first.reported == ("validate",) and after.complete == ()
        assert not second.connected and second.reported == ()
        assert after.federation_id == served.aggregator.plan.federation_id
        assert after.model_uuid == served.aggregator.global_model().uuid
        site1.close()
        operator.close()


def test_new_rpcs_are_admitted_by_the_same_interceptor(tmp_path: Path) -> None:
    with serve(certified_workspace(tmp_path / "ws")) as served:
        impostor = served.client("site-1", certificate_of="site-2")
        with pytest.raises(RefusedError, match="does not match claimed sender 'site-1'"):
            list(impostor.subscribe())
        with pytest.raises(RefusedError, match="does not match"):
            impostor.status()
        impostor.close()
        stranger = served.client("site-1", federation_id="0" * 64)
        with pytest.raises(RefusedError, match="differs from the aggregator"):
            list(stranger.metric_stream())
        with pytest.raises(RefusedError, match="differs from the aggregator"):
            stranger.get_trained_model()
        stranger.close()


def test_health_service_answers_serving_to_a_client_with_a_certificate(tmp_path: Path) -> None:
    paths = certified_workspace(tmp_path / "ws")
    with serve(paths) as served:
        # The server asks every client for a certificate of the federation's CA, so
        # a probe presents one (any collaborator's); the health service itself
        # needs no fx headers.
        key, cert, chain = require_collaborator_credentials(paths, "site-1")
        target = f"127.0.0.1:{served.port}"
        with grpc.secure_channel(target, channel_credentials(key, cert, chain)) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", metadata.SERVICE):
                answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as unknown:
                stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        # Without a client certificate the TLS handshake itself fails.
        anonymous = grpc.ssl_channel_credentials(root_certificates=chain)
        with grpc.secure_channel(target, anonymous) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_subscriber_is_released_when_the_aggregator_stops(tmp_path: Path) -> None:
    events: list[Event] = []
    with serve(certified_workspace(tmp_path / "ws")) as served:
        client: GrpcAggregatorClient = served.client()
        thread = _collect(client.subscribe(replay=True), events)
        deadline = time.monotonic() + 5
        while len(events) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    thread.join(5)
    assert not thread.is_alive()
    assert [e.notification_type for e in events] == ["TRAINING_START", "UPDATE_ROUND_START"]
    client.close()


def test_an_upload_for_a_closed_round_is_refused_from_its_header(tmp_path: Path) -> None:
    """The refusal names the round, not the (bogus) weights: they were never received."""
    with serve(certified_workspace(tmp_path / "ws")) as served:
        client = served.client()
        bogus = {"not-a-tensor-of-this-model": np.zeros(MiB, np.float32)}
        ack = client.send_results(TaskReport(7, "train", 10, {}, bogus))
        assert not ack.accepted
        assert ack.reason == "round 7 is closed; the current round is 0"
        unassigned = client.send_results(TaskReport(0, "no-such-task", 10, {}, bogus))
        assert not unassigned.accepted and "not assigned" in unassigned.reason
        # The same bogus weights for an open task are looked at, and refused for what they are.
        looked_at = client.send_results(TaskReport(0, "train", 10, {}, bogus))
        assert not looked_at.accepted and "not-a-tensor-of-this-model" in looked_at.reason
        client.close()
