"""The collaborator's side of the wire: one long-lived channel, bounded retries."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc
import numpy as np

from fx.errors import AggregatorUnreachable, RefusedError
from fx.tensors.codec import TensorAssembler, iter_chunks
from fx.transport.api import (
    ExperimentDescription,
    RoundClosedError,
    SubmitAck,
    TaskAssignment,
    TaskReport,
)
from fx.transport.grpc import converters, metadata
from fx.transport.grpc.credentials import channel_credentials, channel_options
from fx.transport.grpc.protos import aggregator_pb2 as pb

log = logging.getLogger(__name__)

T = TypeVar("T")

# Failures where the request may not have reached the aggregator and can be repeated:
# every fx call is idempotent (uploads are deduplicated per round, task and sender).
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


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
        self._describe = self._channel.unary_unary(
            metadata.method_path(metadata.GET_EXPERIMENT_DESCRIPTION),
            request_serializer=pb.GetExperimentDescriptionRequest.SerializeToString,
            response_deserializer=pb.ExperimentDescription.FromString,
        )
        self._get_tasks = self._channel.unary_unary(
            metadata.method_path(metadata.GET_TASKS),
            request_serializer=pb.GetTasksRequest.SerializeToString,
            response_deserializer=pb.GetTasksResponse.FromString,
        )
        self._get_model = self._channel.unary_stream(
            metadata.method_path(metadata.GET_MODEL),
            request_serializer=pb.GetModelRequest.SerializeToString,
            response_deserializer=pb.ModelChunk.FromString,
        )
        self._send_results = self._channel.stream_unary(
            metadata.method_path(metadata.SEND_LOCAL_TASK_RESULTS),
            request_serializer=pb.TaskResultPart.SerializeToString,
            response_deserializer=pb.SendResultsResponse.FromString,
        )

        self._heartbeat = self._channel.unary_unary(
            metadata.method_path(metadata.HEARTBEAT),
            request_serializer=pb.HeartbeatRequest.SerializeToString,
            response_deserializer=pb.HeartbeatResponse.FromString,
        )
        self._stopping = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None

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
            assembler = TensorAssembler()
            stream = self._get_model(
                pb.GetModelRequest(round=round),
                metadata=self._metadata,
                timeout=self._settings.call_timeout_s,
            )
            for message in stream:
                assembler.feed(converters.chunk_from_proto(message.chunk))
            return assembler.finish()

        return self._retrying("download the model", download)

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

    # -- internals -----------------------------------------------------------------

    def _result_parts(self, report: TaskReport) -> Iterator[pb.TaskResultPart]:
        yield pb.TaskResultPart(
            round=report.round,
            task=report.task,
            sample_count=report.sample_count,
            metrics=[pb.Metric(name=k, value=v) for k, v in report.metrics.items()],
            has_tensors=report.tensors is not None,
        )
        if report.tensors is not None:
            for chunk in iter_chunks(report.tensors, self._settings.chunk_bytes):
                yield pb.TaskResultPart(chunk=converters.chunk_to_proto(chunk))

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
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise RefusedError(
                        f"the aggregator at {self._settings.target} refused "
                        f"{self._settings.name!r}: {details}",
                        hint="check that your certificate names this collaborator and is listed "
                        "in the aggregator's plan/cols.yaml",
                    ) from None
                if code == grpc.StatusCode.ABORTED:  # the round closed under us
                    raise RoundClosedError(details) from None
                if code == grpc.StatusCode.FAILED_PRECONDITION:
                    raise RefusedError(
                        f"the aggregator at {self._settings.target} refused "
                        f"{self._settings.name!r}: {details}",
                        hint="use the same plan/plan.yaml as the aggregator",
                    ) from None
                if code not in _RETRYABLE:
                    raise
                remaining = give_up_at - time.monotonic()
                if remaining <= 0:
                    raise AggregatorUnreachable(
                        f"could not {action}: the aggregator at {self._settings.target} did not "
                        f"answer for {self._settings.connect_timeout_s:g}s (last error: "
                        f"{code.name}: {details})",
                        hint="start it with `fx aggregator start`, or check network.agg_addr/"
                        "agg_port and collaborator.connect_timeout_s in plan/plan.yaml",
                    ) from None
                pause = min(backoff, remaining, self._settings.retry_max_backoff_s)
                log.info("aggregator unavailable (%s); retrying in %.1fs", code.name, pause)
                time.sleep(pause * random.uniform(0.8, 1.0))
                backoff *= 2
