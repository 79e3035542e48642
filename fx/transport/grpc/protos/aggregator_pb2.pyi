from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TensorChunk(_message.Message):
    __slots__ = ("name", "dtype", "shape", "offset", "total_bytes", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    total_bytes: int
    data: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Metric(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("name", "kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class GetTasksRequest(_message.Message):
    __slots__ = ("wait_s",)
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    wait_s: float
    def __init__(self, wait_s: _Optional[float] = ...) -> None: ...

class GetTasksResponse(_message.Message):
    __slots__ = ("round", "tasks", "model_uuid", "done")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    MODEL_UUID_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    round: int
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    model_uuid: str
    done: bool
    def __init__(self, round: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., model_uuid: _Optional[str] = ..., done: _Optional[bool] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("round", "model_uuid", "chunk")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_UUID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    round: int
    model_uuid: str
    chunk: TensorChunk
    def __init__(self, round: _Optional[int] = ..., model_uuid: _Optional[str] = ..., chunk: _Optional[_Union[TensorChunk, _Mapping]] = ...) -> None: ...

class TaskResultPart(_message.Message):
    __slots__ = ("round", "task", "sample_count", "metrics", "chunk", "has_tensors")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    HAS_TENSORS_FIELD_NUMBER: _ClassVar[int]
    round: int
    task: str
    sample_count: int
    metrics: _containers.RepeatedCompositeFieldContainer[Metric]
    chunk: TensorChunk
    has_tensors: bool
    def __init__(self, round: _Optional[int] = ..., task: _Optional[str] = ..., sample_count: _Optional[int] = ..., metrics: _Optional[_Iterable[_Union[Metric, _Mapping]]] = ..., chunk: _Optional[_Union[TensorChunk, _Mapping]] = ..., has_tensors: _Optional[bool] = ...) -> None: ...

class SendResultsResponse(_message.Message):
    __slots__ = ("accepted", "reason", "duplicate")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    duplicate: bool
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class GetExperimentDescriptionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExperimentDescription(_message.Message):
    __slots__ = ("federation_id", "training_uuid", "plan_json", "round", "rounds_to_train", "collaborators", "done")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINING_UUID_FIELD_NUMBER: _ClassVar[int]
    PLAN_JSON_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_TO_TRAIN_FIELD_NUMBER: _ClassVar[int]
    COLLABORATORS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    training_uuid: str
    plan_json: str
    round: int
    rounds_to_train: int
    collaborators: _containers.RepeatedScalarFieldContainer[str]
    done: bool
    def __init__(self, federation_id: _Optional[str] = ..., training_uuid: _Optional[str] = ..., plan_json: _Optional[str] = ..., round: _Optional[int] = ..., rounds_to_train: _Optional[int] = ..., collaborators: _Optional[_Iterable[str]] = ..., done: _Optional[bool] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class GetAggregatedTensorRequest(_message.Message):
    __slots__ = ("name", "model_uuid")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_UUID_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_uuid: str
    def __init__(self, name: _Optional[str] = ..., model_uuid: _Optional[str] = ...) -> None: ...

class GetTrainedModelRequest(_message.Message):
    __slots__ = ("which",)
    class Which(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LAST: _ClassVar[GetTrainedModelRequest.Which]
        BEST: _ClassVar[GetTrainedModelRequest.Which]
    LAST: GetTrainedModelRequest.Which
    BEST: GetTrainedModelRequest.Which
    WHICH_FIELD_NUMBER: _ClassVar[int]
    which: GetTrainedModelRequest.Which
    def __init__(self, which: _Optional[_Union[GetTrainedModelRequest.Which, str]] = ...) -> None: ...

class GetMetricStreamRequest(_message.Message):
    __slots__ = ("replay",)
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    replay: bool
    def __init__(self, replay: _Optional[bool] = ...) -> None: ...

class MetricRecord(_message.Message):
    __slots__ = ("time", "round", "source", "task", "name", "value")
    TIME_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    time: float
    round: int
    source: str
    task: str
    name: str
    value: float
    def __init__(self, time: _Optional[float] = ..., round: _Optional[int] = ..., source: _Optional[str] = ..., task: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("replay",)
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    replay: bool
    def __init__(self, replay: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("notification_type", "training_uuid", "body_json")
    NOTIFICATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_UUID_FIELD_NUMBER: _ClassVar[int]
    BODY_JSON_FIELD_NUMBER: _ClassVar[int]
    notification_type: str
    training_uuid: str
    body_json: str
    def __init__(self, notification_type: _Optional[str] = ..., training_uuid: _Optional[str] = ..., body_json: _Optional[str] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CollaboratorStatus(_message.Message):
    __slots__ = ("name", "connected", "last_seen_s", "reported")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_S_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    name: str
    connected: bool
    last_seen_s: float
    reported: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., connected: _Optional[bool] = ..., last_seen_s: _Optional[float] = ..., reported: _Optional[_Iterable[str]] = ...) -> None: ...

class FederationStatus(_message.Message):
    __slots__ = ("federation_id", "training_uuid", "round", "rounds_to_train", "final", "done", "model_uuid", "tasks", "collaborators")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINING_UUID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_TO_TRAIN_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    MODEL_UUID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    COLLABORATORS_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    training_uuid: str
    round: int
    rounds_to_train: int
    final: bool
    done: bool
    model_uuid: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    collaborators: _containers.RepeatedCompositeFieldContainer[CollaboratorStatus]
    def __init__(self, federation_id: _Optional[str] = ..., training_uuid: _Optional[str] = ..., round: _Optional[int] = ..., rounds_to_train: _Optional[int] = ..., final: _Optional[bool] = ..., done: _Optional[bool] = ..., model_uuid: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ..., collaborators: _Optional[_Iterable[_Union[CollaboratorStatus, _Mapping]]] = ...) -> None: ...
