from google.protobuf.internal import containers as _containers
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
