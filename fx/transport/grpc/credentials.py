"""gRPC credentials and channel/server options, shared by both ends."""

from __future__ import annotations

from typing import Any

import grpc

# Room for one tensor chunk plus the message's own fields.
_MESSAGE_SLACK = 1 << 20


def message_size_options(chunk_bytes: int) -> list[tuple[str, Any]]:
    limit = chunk_bytes + _MESSAGE_SLACK
    return [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]


def server_options(chunk_bytes: int, keepalive_s: float) -> list[tuple[str, Any]]:
    return [
        *message_size_options(chunk_bytes),
        # Never share a port with another process: a second aggregator must fail to bind.
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
        # No bandwidth-delay probing of uploads: it grows every connection's receive window
        # to many MB, and a collaborator waiting for an upload slot then fills its window
        # in the aggregator's memory. Without it a stream is granted the message it is
        # receiving (chunk_mib) at a time: the aggregator's peak RSS at 100 MB x 8 fell by
        # about 90 MB (docs/performance.md).
        ("grpc.http2.bdp_probe", 0),
    ]


def channel_options(chunk_bytes: int, keepalive_s: float) -> list[tuple[str, Any]]:
    return [
        *message_size_options(chunk_bytes),
        ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Reconnect quickly after an aggregator restart; our own loop bounds the total time.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def server_credentials(key: bytes, cert: bytes, chain: bytes) -> grpc.ServerCredentials:
    """Mutual TLS: the client must present a certificate that chains to ``chain``."""
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=chain, require_client_auth=True
    )


def channel_credentials(key: bytes, cert: bytes, chain: bytes) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=chain, private_key=key, certificate_chain=cert
    )
