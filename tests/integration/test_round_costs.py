"""What a round costs the aggregator, over real gRPC and mutual TLS on 127.0.0.1:
memory that does not grow with the number of collaborators uploading at once, and
one encoding of the global model per round however many collaborators download it.
(Functional checks; the timings are benchmarks/round_bench.py's job.)"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import tracemalloc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from numpy.typing import NDArray

from fx.aggregator import core
from fx.aggregator.store import ModelStore
from fx.collaborator.core import Collaborator
from fx.collaborator.runner import build_runner
from fx.pki.workspace import certify_workspace, require_collaborator_credentials
from fx.plan.loader import load_data_path, load_plan
from fx.tensors.codec import iter_chunks
from fx.transport.api import TaskReport
from fx.transport.grpc import metadata, wire
from fx.transport.grpc.credentials import channel_credentials, channel_options
from fx.transport.grpc.protos import aggregator_pb2 as pb
from fx.workspace.create import NetworkChoice, create_workspace
from fx.workspace.paths import WorkspacePaths
from fx.workspace.templates import get_template
from tests.conftest import free_port
from tests.integration.served import Served, serve

pytestmark = pytest.mark.integration

MiB = 1 << 20
CHUNK = 256 << 10


def _workspace(root: Path, n: int, *, rounds: int = 1) -> WorkspacePaths:
    names = [f"site-{i + 1}" for i in range(n)]
    paths = create_workspace(
        get_template("numpy_logreg_digits"),
        root,
        collaborators=names,
        network=NetworkChoice("localhost", free_port()),
        rounds=rounds,
    )
    certify_workspace(paths, aggregator_hosts=["localhost"], collaborators=names)
    return paths


def _upload_held_halfway(
    served: Served, name: str, update: dict[str, NDArray[Any]], halfway: threading.Barrier
) -> pb.SendResultsResponse:
    """Upload ``update`` as ``name``'s train result, pausing after half of its chunks
    until every other upload is halfway too: all of them are in flight at once."""
    channel = grpc.secure_channel(
        f"127.0.0.1:{served.port}",
        channel_credentials(*require_collaborator_credentials(served.paths, name)),
        options=channel_options(CHUNK, 30),
    )
    send = channel.stream_unary(
        metadata.method_path(metadata.SEND_LOCAL_TASK_RESULTS),
        request_serializer=None,
        response_deserializer=pb.SendResultsResponse.FromString,
    )
    chunks = list(iter_chunks(update, CHUNK))

    def parts() -> Iterator[bytes]:
        header = pb.TaskResultPart(round=0, task="train", sample_count=10, has_tensors=True)
        yield wire.result_part_to_wire(header)
        for index, chunk in enumerate(chunks):
            if index == len(chunks) // 2:
                halfway.wait(timeout=60)
            yield wire.result_part_to_wire(pb.TaskResultPart(), chunk)

    header = metadata.RequestHeader(
        name, metadata.AGGREGATOR_IDENTITY, served.aggregator.plan.federation_id
    )
    try:
        response: pb.SendResultsResponse = send(parts(), metadata=header.as_metadata(), timeout=60)
        return response
    finally:
        channel.close()


def _peak_while_uploading(tmp_path: Path, n: int, model: dict[str, NDArray[Any]]) -> int:
    """Peak traced memory (bytes) above the idle aggregator while ``n`` collaborators upload
    ``model`` at once. The uploads all send the same (read-only) arrays, so what grows
    with ``n`` is what the aggregator holds per upload."""
    paths = _workspace(tmp_path / f"n{n}", n)
    with serve(paths, model=model, chunk_bytes=CHUNK) as served:
        halfway = threading.Barrier(n)
        acks: list[pb.SendResultsResponse] = []
        uploads = [
            threading.Thread(
                target=lambda name=name: acks.append(
                    _upload_held_halfway(served, name, model, halfway)
                )
            )
            for name in served.aggregator.collaborators
        ]
        tracemalloc.start()
        try:
            idle = tracemalloc.get_traced_memory()[0]
            for upload in uploads:
                upload.start()
            for upload in uploads:
                upload.join(60)
            peak = tracemalloc.get_traced_memory()[1] - idle
        finally:
            tracemalloc.stop()
        assert len(acks) == n and all(ack.accepted for ack in acks), acks
        assert all(tasks == ["train"] for tasks in served.aggregator.reported().values())
    return peak


def test_aggregator_memory_does_not_grow_with_concurrent_uploads(tmp_path: Path) -> None:
    model = {"a": np.ones(4 * MiB, np.float32), "b": np.full(4 * MiB, 2.0, np.float32)}
    size = sum(array.nbytes for array in model.values())  # 32 MiB
    two, eight = (_peak_while_uploading(tmp_path, n, model) for n in (2, 8))
    # Buffering each upload until it is complete would hold 6 more half-models (96 MiB)
    # at the barrier; staged on disk and folded from there, only the chunks in flight
    # grow with the number of uploads (about 1 MiB each here).
    assert eight - two < size // 2, (two / MiB, eight / MiB)


def test_each_round_model_is_encoded_once_for_every_collaborator(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fx.transport.grpc.server")
    paths = _workspace(tmp_path / "ws", 3, rounds=2)
    plan = load_plan(paths)
    with serve(paths, chunk_bytes=CHUNK) as served:
        errors: list[BaseException] = []

        def work(name: str) -> None:
            client = served.client(name)
            try:
                runner = build_runner(
                    paths.root,
                    plan.model.runner,
                    data_dir=load_data_path(paths, name),
                    settings=plan.model.settings,
                    collaborator=name,
                )
                Collaborator(name=name, api=client, runner=runner, plan=plan, poll_wait_s=5).run()
            except BaseException as exc:  # surfaced in the test thread
                errors.append(exc)
            finally:
                client.close()

        threads = [
            threading.Thread(target=work, args=(name,)) for name in served.aggregator.collaborators
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert served.aggregator.done
    # Two training rounds and the final validate pass: three models, each downloaded
    # by all three collaborators and encoded once.
    downloads = [
        re.search(r"for round (\d+) to (site-\d)", record.getMessage())
        for record in caplog.records
        if record.getMessage().startswith("serving model")
    ]
    assert sorted((int(d[1]), d[2]) for d in downloads if d) == [
        (round_, f"site-{i}") for round_ in range(3) for i in (1, 2, 3)
    ]
    assert served.servicer.model_cache.encodings == 3


def test_a_download_reuses_the_memory_of_the_previous_one_once_released(tmp_path: Path) -> None:
    model = {"w": np.arange(1000, dtype=np.float32), "n": np.array(3, np.int64)}
    with serve(_workspace(tmp_path / "ws", 2), model=model, chunk_bytes=CHUNK) as served:
        client = served.client("site-1")
        try:
            kept = client.get_model(0)
            again = client.get_model(0)  # the first is still held: new memory
            assert all(again[name] is not kept[name] for name in model)
            arrays = {name: weakref.ref(array) for name, array in again.items()}
            del again  # released, as by a runner that copied the weights into its own
            third = client.get_model(0)
            assert all(third[name] is arrays[name]() for name in model)
            for name, array in model.items():
                np.testing.assert_array_equal(third[name], array)
        finally:
            client.close()


@pytest.mark.parametrize("slow_disk", [False, True], ids=["saved-first", "upload-first"])
def test_rounds_after_the_first_allocate_no_model_sized_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow_disk: bool
) -> None:
    """Once a round's model is encoded for download and saved, the aggregator holds it
    only as its file and its encoded stream, and its arrays become the next round's
    accumulator: from round 1 on, a round adds no model-sized allocation (it would
    add one if the model were also kept in memory). With a slow disk the first
    upload of a round arrives before the model is written, and waits for it."""
    if slow_disk:
        write_last = ModelStore.write_last

        def slow_write_last(self: ModelStore, *args: Any, **kwargs: Any) -> Any:
            time.sleep(0.5)
            return write_last(self, *args, **kwargs)

        monkeypatch.setattr(ModelStore, "write_last", slow_write_last)
    model = {"a": np.ones(2 * MiB, np.float32), "b": np.full(2 * MiB, 2.0, np.float32)}
    size = sum(array.nbytes for array in model.values())  # 16 MiB
    sites = {"site-1": 1.0, "site-2": 3.0}  # equal weights: every mean is 2.0
    updates = {
        name: {key: np.full_like(array, value) for key, array in model.items()}
        for name, value in sites.items()
    }
    closed: queue.Queue[object] = queue.Queue()
    paths = _workspace(tmp_path / "ws", 2, rounds=4)
    peaks = []
    tracemalloc.start()
    try:
        with serve(paths, model=model, chunk_bytes=CHUNK, on_round_closed=closed.put) as served:
            clients = {name: served.client(name) for name in sites}
            try:
                for round_ in range(4):
                    start = tracemalloc.get_traced_memory()[0]
                    tracemalloc.reset_peak()
                    for name, client in clients.items():
                        assignment = client.get_tasks(wait_s=5)
                        assert assignment.round == round_
                        downloaded = client.get_model(round_)
                        expected = model if round_ == 0 else {k: 2.0 for k in model}
                        for key, value in expected.items():
                            np.testing.assert_array_equal(downloaded[key], value)
                        del downloaded  # as a runner that copied the weights does
                        for task in assignment.tasks:
                            train = task.kind == "train"
                            ack = client.send_results(
                                TaskReport(
                                    round=round_,
                                    task=task.name,
                                    sample_count=10,
                                    metrics={} if train else {"accuracy": 0.5},
                                    tensors=updates[name] if train else None,
                                )
                            )
                            assert ack.accepted, ack
                    if not slow_disk:
                        closed.get(timeout=30)  # the round is closed and its files written
                    peaks.append(tracemalloc.get_traced_memory()[1] - start)
            finally:
                for client in clients.values():
                    client.close()
    finally:
        tracemalloc.stop()
    # Round 0 allocates the accumulator and the first encoded stream (about 2x the model).
    assert peaks[0] > size, [peak / MiB for peak in peaks]
    assert max(peaks[1:]) < size // 2, [peak / MiB for peak in peaks]


def test_a_first_update_waits_for_a_slow_disk_only_so_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A disk slower than MODEL_FILE_WAIT_S delays the round's first update by that long
    at most; the update is then folded into new memory, and the result is the same."""
    monkeypatch.setattr(core, "MODEL_FILE_WAIT_S", 0.2)
    write_last = ModelStore.write_last

    def stuck_write_last(self: ModelStore, *args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)
        return write_last(self, *args, **kwargs)

    monkeypatch.setattr(ModelStore, "write_last", stuck_write_last)
    caplog.set_level(logging.WARNING, logger="fx.aggregator.core")
    model = {"w": np.zeros(1000, np.float32)}
    sites = {"site-1": 1.0, "site-2": 3.0}
    first_update_s = []
    with serve(_workspace(tmp_path / "ws", 2, rounds=2), model=model, chunk_bytes=CHUNK) as served:
        clients = {name: served.client(name) for name in sites}
        try:
            for round_ in range(3):  # two training rounds, then the final validate pass
                for name, client in clients.items():
                    assignment = client.get_tasks(wait_s=10)
                    assert assignment.round == round_
                    expected = 0.0 if round_ == 0 else 2.0
                    np.testing.assert_array_equal(client.get_model(round_)["w"], expected)
                    for task in assignment.tasks:
                        train = task.kind == "train"
                        started = time.monotonic()
                        ack = client.send_results(
                            TaskReport(
                                round=round_,
                                task=task.name,
                                sample_count=10,
                                metrics={} if train else {"accuracy": 0.5},
                                tensors={"w": np.full(1000, sites[name], np.float32)}
                                if train
                                else None,
                            )
                        )
                        assert ack.accepted, ack
                        if train and round_ == 1 and name == "site-1":
                            first_update_s.append(time.monotonic() - started)
        finally:
            for client in clients.values():
                client.close()
        assert served.aggregator.wait_until_finished(linger_s=0, timeout=30)
        np.testing.assert_array_equal(served.aggregator.global_model().tensors["w"], 2.0)
    # Round 1's first update waited 0.2 s, not the 1.5 s the model file took.
    assert first_update_s and first_update_s[0] < 1.0, first_update_s
    assert "did not wait any longer for model v1" in caplog.text


def test_a_first_update_that_breaks_off_leaves_nothing_and_holds_up_no_other(
    tmp_path: Path,
) -> None:
    """site-1's upload is the round's first, folded in as it arrives; it breaks off
    halfway. site-2's upload, complete meanwhile, waits for it, then counts; site-1's
    retry counts too: the model is the mean of both, nothing of the broken one."""
    model = {"w": np.zeros(2 * MiB // 4, np.float32)}
    paths = _workspace(tmp_path / "ws", 2, rounds=1)
    with serve(paths, model=model, chunk_bytes=CHUNK) as served:
        clients = {name: served.client(name) for name in ("site-1", "site-2")}
        try:
            for client in clients.values():
                assert client.get_tasks(wait_s=5).round == 0
                client.get_model(0)
                ack = client.send_results(TaskReport(0, "validate", 10, {"accuracy": 0.5}))
                assert ack.accepted, ack
            halfway, give_up = threading.Event(), threading.Event()

            def broken_parts() -> Iterator[bytes]:
                header = pb.TaskResultPart(round=0, task="train", sample_count=10, has_tensors=True)
                yield wire.result_part_to_wire(header)
                chunks = list(iter_chunks({"w": np.full_like(model["w"], 1.0)}, CHUNK))
                for chunk in chunks[: len(chunks) // 2]:
                    yield wire.result_part_to_wire(pb.TaskResultPart(), chunk)
                halfway.set()
                give_up.wait(30)
                raise ConnectionAbortedError("site-1 crashed mid-upload")

            channel = grpc.secure_channel(
                f"127.0.0.1:{served.port}",
                channel_credentials(*require_collaborator_credentials(paths, "site-1")),
                options=channel_options(CHUNK, 30),
            )
            send = channel.stream_unary(
                metadata.method_path(metadata.SEND_LOCAL_TASK_RESULTS),
                request_serializer=None,
                response_deserializer=pb.SendResultsResponse.FromString,
            )
            header = metadata.RequestHeader(
                "site-1", metadata.AGGREGATOR_IDENTITY, served.aggregator.plan.federation_id
            )
            broken = send.future(broken_parts(), metadata=header.as_metadata(), timeout=60)
            assert halfway.wait(30)
            acks: list[Any] = []
            update = {"w": np.full_like(model["w"], 3.0)}
            other = threading.Thread(
                target=lambda: acks.append(
                    clients["site-2"].send_results(TaskReport(0, "train", 10, {}, update))
                )
            )
            other.start()
            other.join(1.0)
            assert other.is_alive(), "site-2's update must wait while site-1's is folded in"
            give_up.set()
            with pytest.raises(grpc.RpcError):
                broken.result(timeout=30)
            channel.close()
            other.join(30)
            assert acks and acks[0].accepted, acks
            retry = clients["site-1"].send_results(
                TaskReport(0, "train", 10, {}, {"w": np.full_like(model["w"], 1.0)})
            )
            assert retry.accepted, retry
        finally:
            for client in clients.values():
                client.close()
        assert served.aggregator.round == 1
        np.testing.assert_array_equal(served.aggregator.global_model().tensors["w"], 2.0)


def test_only_an_update_with_at_most_one_other_to_come_is_folded_on_arrival(
    tmp_path: Path,
) -> None:
    """With more to come, the others would all wait for a slow first upload and be folded
    after its last byte; staged, each is folded as it completes."""
    model = {"w": np.zeros(1000, np.float32)}
    with serve(_workspace(tmp_path / "three", 3), model=model, chunk_bytes=CHUNK) as served:
        assert served.aggregator.receive_first_update("site-1", 0, "train", 10) is None
    with serve(_workspace(tmp_path / "two", 2), model=model, chunk_bytes=CHUNK) as served:
        assert served.aggregator.receive_first_update("site-1", 0, "validate", 10) is None
        receiver = served.aggregator.receive_first_update("site-1", 0, "train", 10)
        assert receiver is not None
        assert served.aggregator.receive_first_update("site-2", 0, "train", 10) is None
        receiver.discard()  # broken off: the next one may be folded on arrival
        again = served.aggregator.receive_first_update("site-2", 0, "train", 10)
        assert again is not None
        again.discard()
