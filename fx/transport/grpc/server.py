"""The aggregator's gRPC server: thin handlers over the Aggregator core."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import HealthServicer

from fx.aggregator.admission import Admission
from fx.aggregator.core import Aggregator, GlobalModel
from fx.errors import NetworkError
from fx.metrics import MetricRecord
from fx.notify.bus import Broadcast
from fx.notify.events import Event
from fx.tensors.codec import Chunk, CodecError, iter_chunks, spec_of
from fx.tensors.pages import release_pages
from fx.tensors.staging import UpdateStager
from fx.transport.api import RoundClosedError, TaskReport
from fx.transport.grpc import converters, metadata, wire
from fx.transport.grpc.credentials import server_options
from fx.transport.grpc.interceptor import AdmissionInterceptor
from fx.transport.grpc.methods import generic_handler
from fx.transport.grpc.protos import aggregator_pb2 as pb

log = logging.getLogger(__name__)

T = TypeVar("T")

# A long-poll never holds a request longer than this, whatever the client asks.
MAX_LONG_POLL_S = 60.0

# Model downloads streamed at once, by default. Serving them is CPU-bound (TLS) on a
# LAN: more streams than cores add no throughput, only gRPC buffers (tens of MB per
# stream, measured: docs/performance.md), and the first collaborators served start
# training sooner. The others wait for a slot, at most DOWNLOAD_SLOT_WAIT_S each, then
# are served anyway: a stalled collaborator holding a slot delays the rest, never blocks them.
DEFAULT_DOWNLOAD_SLOTS = max(2, os.cpu_count() or 2)
DOWNLOAD_SLOT_WAIT_S = 5.0
# Uploads received at once, by default, for the same reasons (receiving is CPU-bound too,
# and each upload in flight holds gRPC buffers); waiting is bounded in the same way.
DEFAULT_UPLOAD_SLOTS = DEFAULT_DOWNLOAD_SLOTS
UPLOAD_SLOT_WAIT_S = DOWNLOAD_SLOT_WAIT_S


class EncodedModelCache:
    """The serialized download stream of the current global model, encoded once per version.

    Every collaborator downloading the same version is served the same bytes:
    the model is encoded once, not once per collaborator. The stream is encoded
    as the first reader needs it, so the first download starts sending at once
    instead of after the whole model is encoded. Only the current version is kept.
    """

    def __init__(self, chunk_bytes: int) -> None:
        self._chunk_bytes = chunk_bytes
        self._lock = threading.Lock()
        self._stream: _EncodedStream | None = None
        self.encodings = 0  # how many times a model was encoded (tests assert on it)

    def messages(self, model: GlobalModel, round: int) -> Iterator[bytes]:
        """The serialized ``ModelChunk`` messages of ``model``, tagged with ``round``."""
        with self._lock:
            stream = self._stream
            if stream is None or stream.model_uuid != model.uuid:
                stream = self._stream = _EncodedStream(model, round, self._chunk_bytes)
                self.encodings += 1
        return iter(stream)


class _EncodedStream:
    """One model version's download messages, each encoded once, when first needed."""

    def __init__(self, model: GlobalModel, round: int, chunk_bytes: int) -> None:
        self.model_uuid = model.uuid
        self._round = round
        self._lock = threading.Lock()
        self._messages: list[bytes] = []
        self._chunks: Iterator[Chunk] | None = iter_chunks(model.tensors, chunk_bytes)

    def __iter__(self) -> Iterator[bytes]:
        index = 0
        while True:
            with self._lock:
                if index == len(self._messages):
                    chunk = None if self._chunks is None else next(self._chunks, None)
                    if chunk is None:
                        self._chunks = None  # complete: let go of the model's tensors
                        return
                    self._messages.append(
                        wire.model_chunk_to_wire(
                            chunk, round=self._round, model_uuid=self.model_uuid
                        )
                    )
                    release_pages(chunk.data)  # a model mapped from its file stays on disk
                    del chunk
                message = self._messages[index]
            yield message
            index += 1


@contextlib.contextmanager
def _slot(slots: threading.Semaphore | None, wait_s: float) -> Iterator[None]:
    """Hold one of ``slots`` (if any is free within ``wait_s``: go ahead regardless after)."""
    taken = slots.acquire(timeout=wait_s) if slots is not None else False
    try:
        yield
    finally:
        if slots is not None and taken:
            slots.release()


class AggregatorServicer:
    """``events`` and ``metrics`` feed the Subscribe and GetMetricStream streams;
    without them those calls answer UNIMPLEMENTED. Uploads are staged in anonymous
    files in ``staging_dir`` (default: the system's temporary directory). At most
    ``download_slots`` model downloads stream at once, and at most ``upload_slots``
    uploads are received at once (None: no limit).

    The global model's download stream is encoded once per version and the same
    bytes are served to every collaborator (:class:`EncodedModelCache`)."""

    def __init__(
        self,
        aggregator: Aggregator,
        *,
        chunk_bytes: int,
        events: Broadcast[Event] | None = None,
        metrics: Broadcast[MetricRecord] | None = None,
        staging_dir: Path | None = None,
        download_slots: int | None = DEFAULT_DOWNLOAD_SLOTS,
        upload_slots: int | None = DEFAULT_UPLOAD_SLOTS,
    ) -> None:
        self._aggregator = aggregator
        self._chunk_bytes = chunk_bytes
        self._events = events
        self._metrics = metrics
        self._staging_dir = staging_dir
        self._download_slots = (
            None if download_slots is None else threading.Semaphore(download_slots)
        )
        self._upload_slots = None if upload_slots is None else threading.Semaphore(upload_slots)
        self.model_cache = EncodedModelCache(chunk_bytes)

    @staticmethod
    def _sender(context: grpc.ServicerContext) -> str:
        return metadata.RequestHeader.from_metadata(context.invocation_metadata()).sender

    def get_experiment_description(self, request: Any, context: grpc.ServicerContext) -> Any:
        return converters.description_to_proto(self._aggregator.describe())

    def get_tasks(self, request: Any, context: grpc.ServicerContext) -> Any:
        wait_s = max(0.0, min(request.wait_s, MAX_LONG_POLL_S))
        assignment = self._aggregator.get_tasks(self._sender(context), wait_s=wait_s)
        return converters.assignment_to_proto(assignment)

    def get_model(self, request: Any, context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            model = self._aggregator.global_model(request.round)
        except RoundClosedError as exc:
            context.abort(grpc.StatusCode.ABORTED, str(exc))
        version = model.version
        messages = self.model_cache.messages(model, request.round)
        # Only the stream holds the model from here, and only until it is encoded: the
        # aggregator may then reuse the model's memory (see Aggregator._write_last).
        del model
        with _slot(self._download_slots, DOWNLOAD_SLOT_WAIT_S):
            log.info(
                "serving model v%d for round %d to %s",
                version,
                request.round,
                self._sender(context),
            )
            yield from messages

    def send_local_task_results(self, parts: Iterator[bytes], context: grpc.ServicerContext) -> Any:
        # A waiting upload is not read: gRPC buffers only what its flow control lets in.
        with _slot(self._upload_slots, UPLOAD_SLOT_WAIT_S):
            return self._receive_results(parts, context)

    def _receive_results(self, parts: Iterator[bytes], context: grpc.ServicerContext) -> Any:
        sender = self._sender(context)
        raw = next(parts, None)
        if raw is None:
            return pb.SendResultsResponse(accepted=False, reason="empty upload")
        try:
            first, chunk = wire.result_part_from_wire(raw)
        except CodecError as exc:
            return pb.SendResultsResponse(accepted=False, reason=str(exc))
        early = self._aggregator.screen(sender, first.round, first.task)
        if early is not None:  # no need to receive weights that would be refused or ignored
            if not early.duplicate:
                log.warning("rejected %s from %s: %s", first.task, sender, early.reason)
            return pb.SendResultsResponse(
                accepted=early.accepted, reason=early.reason, duplicate=early.duplicate
            )
        # The round's first update is folded in as it arrives (fx/algorithms/fold_on_arrival.py);
        # the others go to a file as they arrive, never into memory (fx/tensors/staging.py).
        receiver = (
            self._aggregator.receive_first_update(
                sender, first.round, first.task, first.sample_count
            )
            if first.has_tensors
            else None
        )
        if receiver is None:
            # Only the model's specs are kept: holding the model itself for the length of an
            # upload would keep its memory from becoming the accumulator (Aggregator._write_last).
            expected = {
                name: spec_of(array)
                for name, array in self._aggregator.global_model().tensors.items()
            }
            receiver = UpdateStager(expected, directory=self._staging_dir)
        try:
            try:
                if chunk is not None:
                    receiver.feed(chunk)
                for raw in parts:
                    _, chunk = wire.result_part_from_wire(raw)
                    if chunk is not None:
                        receiver.feed(chunk)
                tensors = receiver.finish() if first.has_tensors else None
            except CodecError as exc:
                log.warning("rejected %s from %s: %s", first.task, sender, exc)
                return pb.SendResultsResponse(accepted=False, reason=str(exc))
            report = TaskReport(
                round=first.round,
                task=first.task,
                sample_count=first.sample_count,
                metrics={metric.name: metric.value for metric in first.metrics},
                tensors=tensors,
            )
            ack = self._aggregator.submit(sender, report)
        finally:
            receiver.discard()
        return pb.SendResultsResponse(
            accepted=ack.accepted, reason=ack.reason, duplicate=ack.duplicate
        )

    def get_aggregated_tensor(self, request: Any, context: grpc.ServicerContext) -> Iterator[bytes]:
        model = self._aggregator.global_model()
        if request.model_uuid and request.model_uuid != model.uuid:
            context.abort(
                grpc.StatusCode.ABORTED,
                f"model {request.model_uuid} is no longer the global model (now {model.uuid})",
            )
        tensor = model.tensors.get(request.name)
        if tensor is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"the global model has no tensor {request.name!r}"
            )
        yield from self._encode(model, {request.name: tensor})

    def get_trained_model(self, request: Any, context: grpc.ServicerContext) -> Iterator[bytes]:
        if request.which == pb.GetTrainedModelRequest.BEST:
            best = self._aggregator.best_model()
            if best is None:
                context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    "no best model yet: no round has been scored by aggregator.best_metric",
                )
                return  # not reached: abort raises
            yield from self._encode(best, best.tensors)
        else:
            model = self._aggregator.global_model()
            messages = self.model_cache.messages(model, model.version)
            del model  # as in get_model: only the stream holds it, until encoded
            yield from messages

    def get_metric_stream(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        for record in self._follow(self._metrics, request.replay, context, "metrics"):
            yield converters.metric_to_proto(record)

    def subscribe(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        for event in self._follow(self._events, request.replay, context, "events"):
            yield converters.event_to_proto(event)

    def get_status(self, request: Any, context: grpc.ServicerContext) -> Any:
        # Deliberately not a sign of life: an operator's status call says nothing about
        # whether the collaborator whose certificate it borrows is running.
        return converters.status_to_proto(self._aggregator.status())

    def _encode(self, model: GlobalModel, tensors: Mapping[str, Any]) -> Iterator[bytes]:
        for chunk in iter_chunks(tensors, self._chunk_bytes):
            message = wire.model_chunk_to_wire(chunk, round=model.version, model_uuid=model.uuid)
            release_pages(chunk.data)
            yield message

    @staticmethod
    def _follow(
        broadcast: Broadcast[T] | None, replay: bool, context: grpc.ServicerContext, what: str
    ) -> Iterator[T]:
        """Items of ``broadcast`` until it closes or the call ends (cancel, deadline, stop)."""
        if broadcast is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"this aggregator publishes no {what}")
            return  # not reached: abort raises
        subscription = broadcast.subscribe(replay=replay)
        if not context.add_callback(subscription.close):
            subscription.close()  # the call had already ended
        yield from subscription
        if subscription.overflowed:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this stream fell too far behind the {what}; subscribe again",
            )

    def heartbeat(self, request: Any, context: grpc.ServicerContext) -> Any:
        sender = self._sender(context)
        self._aggregator.mark_alive(sender)
        return pb.HeartbeatResponse(round=self._aggregator.round)

    def generic_handler(self) -> grpc.GenericRpcHandler:
        return generic_handler(
            {
                metadata.GET_EXPERIMENT_DESCRIPTION: self.get_experiment_description,
                metadata.GET_TASKS: self.get_tasks,
                metadata.GET_MODEL: self.get_model,
                metadata.HEARTBEAT: self.heartbeat,
                metadata.SEND_LOCAL_TASK_RESULTS: self.send_local_task_results,
                metadata.GET_AGGREGATED_TENSOR: self.get_aggregated_tensor,
                metadata.GET_TRAINED_MODEL: self.get_trained_model,
                metadata.GET_METRIC_STREAM: self.get_metric_stream,
                metadata.SUBSCRIBE: self.subscribe,
                metadata.GET_STATUS: self.get_status,
            }
        )


@contextlib.contextmanager
def run_server(
    servicer: AggregatorServicer,
    *,
    admission: Admission,
    host: str,
    port: int,
    credentials: grpc.ServerCredentials | None,
    chunk_bytes: int,
    keepalive_s: float,
    max_workers: int,
) -> Iterator[int]:
    """Serve on host:port only; yields the bound port. ``credentials=None`` means no TLS."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fx-rpc"),
        interceptors=[AdmissionInterceptor(admission)],
        options=server_options(chunk_bytes, keepalive_s),
    )
    server.add_generic_rpc_handlers((servicer.generic_handler(),))
    # grpc.health.v1 for probes and orchestrators. The admission interceptor guards only
    # fx.v1.Aggregator, but TLS still asks every client for a certificate of this CA.
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = (
            server.add_secure_port(address, credentials)
            if credentials is not None
            else server.add_insecure_port(address)
        )
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise NetworkError(
            f"cannot listen on {address}: the port is in use or the address is not local",
            hint="stop the other process, or change network.agg_port in plan/plan.yaml",
        )
    server.start()
    health.set("", health_pb2.HealthCheckResponse.SERVING)
    health.set(metadata.SERVICE, health_pb2.HealthCheckResponse.SERVING)
    try:
        yield bound
    finally:
        health.enter_graceful_shutdown()  # probes see NOT_SERVING during the grace period
        server.stop(grace=2.0).wait()
