"""Core values <-> protobuf messages, in pairs: ``x_to_proto`` / ``x_from_proto``."""

from __future__ import annotations

import json

from fx.metrics import MetricRecord
from fx.notify.events import Event
from fx.tensors.codec import Chunk
from fx.transport.api import (
    AssignedTask,
    CollaboratorStatus,
    ExperimentDescription,
    FederationStatus,
    TaskAssignment,
)
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


def event_to_proto(event: Event) -> pb.Event:
    return pb.Event(
        notification_type=event.notification_type,
        training_uuid=event.training_uuid,
        body_json=json.dumps(dict(event.body), separators=(",", ":")),
    )


def event_from_proto(message: pb.Event) -> Event:
    """ValueError if the body is not a JSON object."""
    body = json.loads(message.body_json) if message.body_json else {}
    return Event.from_json(
        {
            "notification_type": message.notification_type,
            "training_uuid": message.training_uuid,
            "body": body,
        }
    )


def metric_to_proto(record: MetricRecord) -> pb.MetricRecord:
    return pb.MetricRecord(
        time=record.time,
        round=record.round,
        source=record.source,
        task=record.task,
        name=record.name,
        value=record.value,
    )


def metric_from_proto(message: pb.MetricRecord) -> MetricRecord:
    return MetricRecord(
        time=message.time,
        round=message.round,
        source=message.source,
        task=message.task,
        name=message.name,
        value=message.value,
    )


def status_to_proto(status: FederationStatus) -> pb.FederationStatus:
    return pb.FederationStatus(
        federation_id=status.federation_id,
        training_uuid=status.training_uuid,
        round=status.round,
        rounds_to_train=status.rounds_to_train,
        final=status.final,
        done=status.done,
        model_uuid=status.model_uuid,
        tasks=list(status.tasks),
        collaborators=[
            pb.CollaboratorStatus(
                name=c.name,
                connected=c.connected,
                last_seen_s=-1.0 if c.last_seen_s is None else c.last_seen_s,
                reported=list(c.reported),
            )
            for c in status.collaborators
        ],
    )


def status_from_proto(message: pb.FederationStatus) -> FederationStatus:
    return FederationStatus(
        federation_id=message.federation_id,
        training_uuid=message.training_uuid,
        round=message.round,
        rounds_to_train=message.rounds_to_train,
        final=message.final,
        done=message.done,
        model_uuid=message.model_uuid,
        tasks=tuple(message.tasks),
        collaborators=tuple(
            CollaboratorStatus(
                name=c.name,
                connected=c.connected,
                last_seen_s=None if c.last_seen_s < 0 else c.last_seen_s,
                reported=tuple(c.reported),
            )
            for c in message.collaborators
        ),
    )
