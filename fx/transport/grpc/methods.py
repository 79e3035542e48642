"""The service's methods, described once; the client's calls and the server's handlers
are both built from this table, so the two ends cannot disagree on a method's shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import grpc

from fx.transport.grpc import metadata as names
from fx.transport.grpc.protos import aggregator_pb2 as pb

Cardinality = Literal["unary_unary", "unary_stream", "stream_unary"]


@dataclass(frozen=True)
class Method:
    name: str
    cardinality: Cardinality
    # A protobuf message class, or None: raw bytes framed by fx/transport/grpc/wire.py
    # (tensor payloads, so the bytes are never copied by protobuf).
    request: Any | None
    response: Any | None


SERVICE_METHODS = (
    Method(
        names.GET_EXPERIMENT_DESCRIPTION,
        "unary_unary",
        pb.GetExperimentDescriptionRequest,
        pb.ExperimentDescription,
    ),
    Method(names.GET_TASKS, "unary_unary", pb.GetTasksRequest, pb.GetTasksResponse),
    Method(names.GET_MODEL, "unary_stream", pb.GetModelRequest, None),
    Method(names.SEND_LOCAL_TASK_RESULTS, "stream_unary", None, pb.SendResultsResponse),
    Method(names.HEARTBEAT, "unary_unary", pb.HeartbeatRequest, pb.HeartbeatResponse),
    Method(names.GET_AGGREGATED_TENSOR, "unary_stream", pb.GetAggregatedTensorRequest, None),
    Method(names.GET_TRAINED_MODEL, "unary_stream", pb.GetTrainedModelRequest, None),
    Method(names.GET_METRIC_STREAM, "unary_stream", pb.GetMetricStreamRequest, pb.MetricRecord),
    Method(names.SUBSCRIBE, "unary_stream", pb.SubscribeRequest, pb.Event),
    Method(names.GET_STATUS, "unary_unary", pb.GetStatusRequest, pb.FederationStatus),
)


def _serializer(message: Any | None) -> Callable[[Any], bytes] | None:
    return None if message is None else message.SerializeToString


def _parser(message: Any | None) -> Callable[[bytes], Any] | None:
    return None if message is None else message.FromString


def client_calls(channel: grpc.Channel) -> dict[str, Any]:
    """One multicallable per method on ``channel``, by method name."""
    return {
        method.name: getattr(channel, method.cardinality)(
            names.method_path(method.name),
            request_serializer=_serializer(method.request),
            response_deserializer=_parser(method.response),
        )
        for method in SERVICE_METHODS
    }


def generic_handler(behaviors: dict[str, Callable[..., Any]]) -> grpc.GenericRpcHandler:
    """The service's handler; ``behaviors`` maps every method name to its implementation."""
    missing = {method.name for method in SERVICE_METHODS} - behaviors.keys()
    if missing:
        raise ValueError(f"no implementation for {', '.join(sorted(missing))}")
    return grpc.method_handlers_generic_handler(
        names.SERVICE,
        {
            method.name: getattr(grpc, f"{method.cardinality}_rpc_method_handler")(
                behaviors[method.name],
                request_deserializer=_parser(method.request),
                response_serializer=_serializer(method.response),
            )
            for method in SERVICE_METHODS
        },
    )
