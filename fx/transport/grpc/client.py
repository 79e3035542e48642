"""The collaborator's side of the wire: one long-lived channel, bounded retries."""

from __future__ import annotations

import dataclasses
import enum
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
import numpy as np

from fx.errors import AggregatorUnreachable, NetworkError, RefusedError
from fx.metrics import MetricRecord
from fx.notify.events import Event
from fx.plan.model import Plan
from fx.tensors.codec import TensorAssembler, iter_chunks
from fx.transport.api import (
    ExperimentDescription,
    FederationStatus,
    RoundClosedError,
    SubmitAck,
    TaskAssignment,
    TaskReport,
)
from fx.transport.grpc import converters, metadata, wire
from fx.transport.grpc.credentials import channel_credentials, channel_options
from fx.transport.grpc.methods import client_calls
from fx.transport.grpc.protos import aggregator_pb2 as pb

log = logging.getLogger(__name__)

T = TypeVar("T")

# Failures where the request may not have reached the aggregator and can be repeated:
# every fx call is idempotent (uploads are deduplicated per round, task and sender).
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class ConnectFailure(enum.Enum):
    """Why no connection to the aggregator could be made, as far as gRPC tells."""

    NOT_LISTENING = "not listening"
    HANDSHAKE_CLOSED_BY_AGGREGATOR = "handshake closed by the aggregator"
    AGGREGATOR_CERTIFICATE_REFUSED = "aggregator certificate refused"
    NO_ANSWER = "no answer"


# gRPC reports every failure to connect as UNAVAILABLE, with the cause only in free text
# ("failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:50051: Socket
# closed"): the Python API exposes no structured reason. This heuristic on that text only
# words the final error and its hint; whether to retry is decided by the status code alone.
#   "handshake failed" / "not in peer certificate": our TLS stack refused the aggregator's
#       certificate; its reason follows in the text.
#   "connection refused": the TCP connection was refused: nothing listens at that address.
#   "socket closed" / "connection reset": TCP connected, then the peer hung up before HTTP/2
#       began: in practice the aggregator refusing our certificate in the TLS handshake
#       (from another CA, expired, of the wrong role), a refusal it logs with the reason.
_CONNECT_FAILURES = (
    (
        ("handshake failed", "not in peer certificate"),
        ConnectFailure.AGGREGATOR_CERTIFICATE_REFUSED,
    ),
    (("connection refused",), ConnectFailure.NOT_LISTENING),
    (("socket closed", "connection reset"), ConnectFailure.HANDSHAKE_CLOSED_BY_AGGREGATOR),
)


def classify_connect_failure(details: str) -> ConnectFailure:
    """What the details of an UNAVAILABLE error say went wrong (see the comment above)."""
    text = details.lower()
    for fragments, failure in _CONNECT_FAILURES:
        if any(fragment in text for fragment in fragments):
            return failure
    return ConnectFailure.NO_ANSWER


class ServerStream(Generic[T]):
    """The items of one server-streaming call, converted as they arrive.

    :meth:`close` (from any thread) cancels the call and ends the iteration
    quietly; any other failure is raised as an fx error while iterating.
    """

    def __init__(
        self,
        call: Any,
        convert: Callable[[Any], T],
        translate: Callable[[grpc.RpcError], BaseException],
    ) -> None:
        self._call = call
        self._convert = convert
        self._translate = translate
        self._closed = False

    def __iter__(self) -> Iterator[T]:
        try:
            for message in self._call:
                yield self._convert(message)
        except grpc.RpcError as exc:
            if self._closed and exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise self._translate(exc) from None

    def close(self) -> None:
        self._closed = True
        self._call.cancel()


@dataclass(frozen=True)
class ClientSettings:
    target: str
    name: str
    federation_id: str
    chunk_bytes: int
    keepalive_s: float
    connect_timeout_s: float
    retry_max_backoff_s: float
    heartbeat_s: float = 5.0
    call_timeout_s: float = 600.0

    @classmethod
    def from_plan(cls, plan: Plan, name: str, **overrides: Any) -> ClientSettings:
        """The settings the plan gives collaborator ``name``; ``overrides`` replace fields."""
        network, collaborator = plan.network, plan.collaborator
        settings = cls(
            target=network.target,
            name=name,
            federation_id=plan.federation_id,
            chunk_bytes=network.chunk_bytes,
            keepalive_s=network.keepalive_s,
            connect_timeout_s=collaborator.connect_timeout_s,
            retry_max_backoff_s=collaborator.retry_max_backoff_s,
            heartbeat_s=collaborator.heartbeat_s,
        )
        return dataclasses.replace(settings, **overrides)


class GrpcAggregatorClient:
    """An AggregatorAPI over gRPC for the collaborator ``settings.name``."""

    def __init__(self, settings: ClientSettings, *, tls: tuple[bytes, bytes, bytes] | None) -> None:
        self._settings = settings
        options = channel_options(settings.chunk_bytes, settings.keepalive_s)
        if tls is None:
            self._channel = grpc.insecure_channel(settings.target, options=options)
        else:
            key, cert, chain = tls
            self._channel = grpc.secure_channel(
                settings.target, channel_credentials(key, cert, chain), options=options
            )
        self._metadata = metadata.RequestHeader(
            settings.name, metadata.AGGREGATOR_IDENTITY, settings.federation_id
        ).as_metadata()
        calls = client_calls(self._channel)
        self._describe = calls[metadata.GET_EXPERIMENT_DESCRIPTION]
        self._get_tasks = calls[metadata.GET_TASKS]
        self._get_model = calls[metadata.GET_MODEL]
        self._send_results = calls[metadata.SEND_LOCAL_TASK_RESULTS]
        self._heartbeat = calls[metadata.HEARTBEAT]
        self._get_aggregated_tensor = calls[metadata.GET_AGGREGATED_TENSOR]
        self._get_trained_model = calls[metadata.GET_TRAINED_MODEL]
        self._get_metric_stream = calls[metadata.GET_METRIC_STREAM]
        self._subscribe = calls[metadata.SUBSCRIBE]
        self._get_status = calls[metadata.GET_STATUS]
        self._stopping = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        self._last_download: dict[str, np.ndarray] = {}

    def start_heartbeat(self) -> None:
        """Tell the aggregator every ``heartbeat_s`` that we are alive (also while training)."""
        if self._heartbeat_thread is None:
            self._heartbeat_thread = threading.Thread(
                target=self._beat, name="fx-heartbeat", daemon=True
            )
            self._heartbeat_thread.start()

    def _beat(self) -> None:
        while not self._stopping.wait(self._settings.heartbeat_s):
            try:
                self._heartbeat(
                    pb.HeartbeatRequest(),
                    metadata=self._metadata,
                    timeout=self._settings.heartbeat_s,
                )
            except grpc.RpcError as exc:  # the task loop reports real trouble; this only informs
                log.debug("heartbeat failed: %s", exc.code())

    # -- AggregatorAPI -------------------------------------------------------

    def describe(self) -> ExperimentDescription:
        message = self._retrying(
            "connect",
            lambda: self._describe(
                pb.GetExperimentDescriptionRequest(),
                metadata=self._metadata,
                timeout=30.0,
            ),
        )
        return converters.description_from_proto(message)

    def get_tasks(self, *, wait_s: float) -> TaskAssignment:
        message = self._retrying(
            "get tasks",
            lambda: self._get_tasks(
                pb.GetTasksRequest(wait_s=wait_s), metadata=self._metadata, timeout=wait_s + 30.0
            ),
        )
        return converters.assignment_from_proto(message)

    def get_model(self, round: int) -> dict[str, np.ndarray]:
        def download() -> dict[str, np.ndarray]:
            assembler = TensorAssembler(reuse=self._released_download())
            stream = self._get_model(
                pb.GetModelRequest(round=round),
                metadata=self._metadata,
                timeout=self._settings.call_timeout_s,
            )
            for raw in stream:
                assembler.feed(wire.model_chunk_from_wire(raw)[2])
            model = assembler.finish()
            self._last_download = dict(model)
            return model

        return self._retrying("download the model", download)

    def _released_download(self) -> dict[str, np.ndarray]:
        """The arrays of the previous download that nothing holds any more: a runner that
        copied the weights into its own (as frameworks do) released them, and the next
        download is received into that memory instead of new memory."""
        previous, self._last_download = self._last_download, {}
        released = {}
        while previous:
            name, array = previous.popitem()
            # 2: this name and getrefcount's argument. The assembler's arrays own their
            # memory, so every view of one refers to it and is counted here.
            if sys.getrefcount(array) == 2:
                released[name] = array
        return released

    def send_results(self, report: TaskReport) -> SubmitAck:
        message = self._retrying(
            f"upload {report.task}",
            lambda: self._send_results(
                self._result_parts(report),
                metadata=self._metadata,
                timeout=self._settings.call_timeout_s,
            ),
        )
        return SubmitAck(
            accepted=message.accepted, reason=message.reason, duplicate=message.duplicate
        )

    def close(self) -> None:
        self._stopping.set()
        self._channel.close()

    # -- beyond the task loop: models, events, metrics, status -------------------

    def get_aggregated_tensor(self, name: str, *, model_uuid: str = "") -> np.ndarray:
        """One tensor of the current global model (LookupError if it has none of that
        name; RoundClosedError if ``model_uuid`` is given and no longer current)."""
        request = pb.GetAggregatedTensorRequest(name=name, model_uuid=model_uuid)
        _, tensors = self._retrying(
            f"download tensor {name!r}",
            lambda: self._download(self._get_aggregated_tensor, request),
        )
        return tensors[name]

    def get_trained_model(self, *, best: bool = False) -> tuple[str, dict[str, np.ndarray]]:
        """(model uuid, tensors) of the last global model, or of the best one so far
        (LookupError when there is no best model yet)."""
        which = pb.GetTrainedModelRequest.BEST if best else pb.GetTrainedModelRequest.LAST
        return self._retrying(
            "download the trained model",
            lambda: self._download(self._get_trained_model, pb.GetTrainedModelRequest(which=which)),
        )

    def status(self) -> FederationStatus:
        message = self._retrying(
            "get the status",
            lambda: self._get_status(pb.GetStatusRequest(), metadata=self._metadata, timeout=30.0),
        )
        return converters.status_from_proto(message)

    def subscribe(self, *, replay: bool = False) -> ServerStream[Event]:
        """Lifecycle events as they happen (with ``replay``: this training's earlier ones first).

        Not retried: iterating raises NetworkError when the stream breaks, RefusedError
        when refused, NotImplementedError if the aggregator publishes no events.
        """
        return self._follow(
            self._subscribe,
            pb.SubscribeRequest(replay=replay),
            converters.event_from_proto,
            "events",
        )

    def metric_stream(self, *, replay: bool = False) -> ServerStream[MetricRecord]:
        """Metric records as the aggregator writes them (see :meth:`subscribe`)."""
        return self._follow(
            self._get_metric_stream,
            pb.GetMetricStreamRequest(replay=replay),
            converters.metric_from_proto,
            "metrics",
        )

    def _download(self, call: Any, request: Any) -> tuple[str, dict[str, np.ndarray]]:
        assembler = TensorAssembler()
        model_uuid = ""
        for raw in call(request, metadata=self._metadata, timeout=self._settings.call_timeout_s):
            _, model_uuid, chunk = wire.model_chunk_from_wire(raw)
            assembler.feed(chunk)
        return model_uuid, assembler.finish()

    # -- internals -----------------------------------------------------------------

    def _result_parts(self, report: TaskReport) -> Iterator[bytes]:
        """Serialized TaskResultParts: the header, then one part per chunk."""
        header = pb.TaskResultPart(
            round=report.round,
            task=report.task,
            sample_count=report.sample_count,
            metrics=[pb.Metric(name=k, value=v) for k, v in report.metrics.items()],
            has_tensors=report.tensors is not None,
        )
        yield wire.result_part_to_wire(header)
        if report.tensors is not None:
            empty = pb.TaskResultPart()
            for chunk in iter_chunks(report.tensors, self._settings.chunk_bytes):
                yield wire.result_part_to_wire(empty, chunk)

    def _final_error(self, exc: grpc.RpcError) -> BaseException | None:
        """The error to raise for a failed call, or None when retrying may help.
        (``exc`` itself when fx has no better name for it.)"""
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.UNAUTHENTICATED:  # who are you?
            return RefusedError(
                f"the aggregator at {self._settings.target} refused "
                f"{self._settings.name!r}: {details}",
                hint=f"this collaborator's certificate must name it: check with "
                f"`fx pki show {self._settings.name}`",
            )
        if code == grpc.StatusCode.PERMISSION_DENIED:  # known, but not allowed
            return RefusedError(
                f"the aggregator at {self._settings.target} refused "
                f"{self._settings.name!r}: {details}",
                hint="ask the federation's owner: the name must be in the aggregator's "
                "plan/cols.yaml and its certificate not revoked (`fx pki list` there)",
            )
        if code == grpc.StatusCode.ABORTED:  # the round (or model version) changed under us
            return RoundClosedError(details)
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return RefusedError(
                f"the aggregator at {self._settings.target} refused "
                f"{self._settings.name!r}: {details}",
                hint="use the same plan/plan.yaml as the aggregator",
            )
        if code == grpc.StatusCode.NOT_FOUND:
            return LookupError(details)
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return NotImplementedError(details)
        return None if code in _RETRYABLE else exc

    def _unreachable(
        self, action: str, code: grpc.StatusCode, details: str
    ) -> AggregatorUnreachable:
        """The error for giving up after ``connect_timeout_s``, worded by why we failed."""
        target, waited = self._settings.target, f"{self._settings.connect_timeout_s:g}s"
        last = f"last error: {code.name}: {details}"
        failure = classify_connect_failure(details)
        if failure is ConnectFailure.HANDSHAKE_CLOSED_BY_AGGREGATOR:
            return AggregatorUnreachable(
                f"could not {action}: the aggregator at {target} is reachable but closed the "
                f"TLS handshake (retried for {waited}; {last})",
                hint="it refused this collaborator's certificate: likely one from another CA, "
                "expired, or not a collaborator certificate; check it with "
                f"`fx pki show {self._settings.name}` (the aggregator's logs/aggregator.log "
                "names the reason)",
            )
        if failure is ConnectFailure.AGGREGATOR_CERTIFICATE_REFUSED:
            return AggregatorUnreachable(
                f"could not {action}: this collaborator refused the certificate of the "
                f"aggregator at {target} ({last})",
                hint="cert/cert_chain.pem must be the federation's chain, and the aggregator's "
                "certificate a server certificate for network.agg_addr (check both with "
                "`fx pki show`)",
            )
        if failure is ConnectFailure.NOT_LISTENING:
            return AggregatorUnreachable(
                f"could not {action}: the aggregator at {target} did not answer for {waited}: "
                "nothing is listening there (connection refused)",
                hint="start it with `fx aggregator start`, or check network.agg_addr/agg_port "
                "in plan/plan.yaml (collaborator.connect_timeout_s sets how long to wait)",
            )
        return AggregatorUnreachable(
            f"could not {action}: the aggregator at {target} did not answer for {waited} ({last})",
            hint="start it with `fx aggregator start`, or check network.agg_addr/"
            "agg_port and collaborator.connect_timeout_s in plan/plan.yaml",
        )

    def _follow(
        self, call: Any, request: Any, convert: Callable[[Any], T], what: str
    ) -> ServerStream[T]:
        return ServerStream(
            call(request, metadata=self._metadata),
            convert,
            lambda exc: self._stream_error(exc, what),
        )

    def _stream_error(self, exc: grpc.RpcError, what: str) -> BaseException:
        error = self._final_error(exc)
        if error is not None and error is not exc:
            return error
        return NetworkError(
            f"the {what} stream from {self._settings.target} broke: "
            f"{exc.code().name}: {exc.details() or ''}",
            hint="subscribe again; the aggregator may have restarted",
        )

    def _retrying(self, action: str, call: Callable[[], T]) -> T:
        """Run ``call``; while the aggregator is unreachable retry with jittered
        exponential backoff, giving up after ``connect_timeout_s``."""
        give_up_at = time.monotonic() + self._settings.connect_timeout_s
        backoff = 0.2
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
                error = self._final_error(exc)
                if error is exc:
                    raise
                if error is not None:
                    raise error from None
                remaining = give_up_at - time.monotonic()
                if remaining <= 0:
                    raise self._unreachable(action, code, details) from None
                pause = min(backoff, remaining, self._settings.retry_max_backoff_s)
                log.info("aggregator unavailable (%s); retrying in %.1fs", code.name, pause)
                time.sleep(pause * random.uniform(0.8, 1.0))
                backoff *= 2
