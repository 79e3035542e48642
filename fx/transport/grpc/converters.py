"""Core values <-> protobuf messages, in pairs: ``x_to_proto`` / ``x_from_proto``."""

from __future__ import annotations

import json

from fx.tensors.codec import Chunk
from fx.transport.api import AssignedTask, ExperimentDescription, TaskAssignment
from fx.transport.grpc.protos import aggregator_pb2 as pb


def chunk_to_proto(chunk: Chunk) -> pb.TensorChunk:
    return pb.TensorChunk(
        name=chunk.name,
        dtype=chunk.dtype,
        shape=list(chunk.shape),
        offset=chunk.offset,
        total_bytes=chunk.total_bytes,
        data=bytes(chunk.data),
    )


def chunk_from_proto(message: pb.TensorChunk) -> Chunk:
    return Chunk(
        name=message.name,
        dtype=message.dtype,
        shape=tuple(message.shape),
        offset=message.offset,
        total_bytes=message.total_bytes,
        data=message.data,
    )


def assignment_to_proto(assignment: TaskAssignment) -> pb.GetTasksResponse:
    return pb.GetTasksResponse(
        round=assignment.round,
        tasks=[pb.Task(name=task.name, kind=task.kind) for task in assignment.tasks],
        model_uuid=assignment.model_uuid,
        done=assignment.done,
    )


def assignment_from_proto(message: pb.GetTasksResponse) -> TaskAssignment:
    tasks = []
    for task in message.tasks:
        if task.kind not in ("train", "validate"):
            raise ValueError(
                f"aggregator assigned task {task.name!r} of unknown kind {task.kind!r}"
            )
        tasks.append(AssignedTask(task.name, task.kind))
    return TaskAssignment(
        round=message.round, tasks=tuple(tasks), model_uuid=message.model_uuid, done=message.done
    )


def description_to_proto(description: ExperimentDescription) -> pb.ExperimentDescription:
    return pb.ExperimentDescription(
        federation_id=description.federation_id,
        training_uuid=description.training_uuid,
        plan_json=json.dumps(description.plan, sort_keys=True),
        round=description.round,
        rounds_to_train=description.rounds_to_train,
        collaborators=list(description.collaborators),
        done=description.done,
    )


def description_from_proto(message: pb.ExperimentDescription) -> ExperimentDescription:
    return ExperimentDescription(
        federation_id=message.federation_id,
        training_uuid=message.training_uuid,
        plan=json.loads(message.plan_json) if message.plan_json else {},
        round=message.round,
        rounds_to_train=message.rounds_to_train,
        collaborators=tuple(message.collaborators),
        done=message.done,
    )
