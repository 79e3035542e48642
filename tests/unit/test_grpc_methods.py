"""The method table both ends are built from matches the .proto service exactly."""

from __future__ import annotations

import pytest

from fx.transport.grpc.methods import SERVICE_METHODS, generic_handler
from fx.transport.grpc.protos import aggregator_pb2 as pb


def test_every_rpc_of_the_proto_is_in_the_table_with_its_streaming_shape() -> None:
    service = pb.DESCRIPTOR.services_by_name["Aggregator"]
    table = {method.name: method for method in SERVICE_METHODS}
    assert table.keys() == {method.name for method in service.methods}
    for rpc in service.methods:
        streaming = (rpc.client_streaming, rpc.server_streaming)
        expected = {
            (False, False): "unary_unary",
            (False, True): "unary_stream",
            (True, False): "stream_unary",
        }[streaming]
        assert table[rpc.name].cardinality == expected, rpc.name
        # A message class in the table must be the one the proto declares.
        for declared, ours in (
            (rpc.input_type, table[rpc.name].request),
            (rpc.output_type, table[rpc.name].response),
        ):
            if ours is not None:
                assert ours.DESCRIPTOR.full_name == declared.full_name, rpc.name


def test_a_server_missing_an_implementation_is_refused() -> None:
    behaviors = {method.name: (lambda request, context: None) for method in SERVICE_METHODS}
    del behaviors["GetTasks"]
    with pytest.raises(ValueError, match="GetTasks"):
        generic_handler(behaviors)
