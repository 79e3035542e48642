"""The request header every call carries, as gRPC metadata, and the service's method names."""

from __future__ import annotations

from dataclasses import dataclass

SERVICE = "fx.v1.Aggregator"
SENDER = "fx-sender"
RECEIVER = "fx-receiver"
FEDERATION_ID = "fx-federation-id"
AGGREGATOR_IDENTITY = "aggregator"

GET_EXPERIMENT_DESCRIPTION = "GetExperimentDescription"
GET_TASKS = "GetTasks"
GET_MODEL = "GetModel"
SEND_LOCAL_TASK_RESULTS = "SendLocalTaskResults"
HEARTBEAT = "Heartbeat"
GET_AGGREGATED_TENSOR = "GetAggregatedTensor"
GET_TRAINED_MODEL = "GetTrainedModel"
GET_METRIC_STREAM = "GetMetricStream"
SUBSCRIBE = "Subscribe"
GET_STATUS = "GetStatus"


def method_path(method: str) -> str:
    return f"/{SERVICE}/{method}"


@dataclass(frozen=True)
class RequestHeader:
    sender: str
    receiver: str
    federation_id: str

    def as_metadata(self) -> tuple[tuple[str, str], ...]:
        return (
            (SENDER, self.sender),
            (RECEIVER, self.receiver),
            (FEDERATION_ID, self.federation_id),
        )

    @classmethod
    def from_metadata(cls, metadata: object) -> RequestHeader:
        values = dict(metadata or ())  # type: ignore[call-overload]
        return cls(
            sender=str(values.get(SENDER, "")),
            receiver=str(values.get(RECEIVER, "")),
            federation_id=str(values.get(FEDERATION_ID, "")),
        )
