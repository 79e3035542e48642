"""One server interceptor that admits or refuses every call (see fx/aggregator/admission.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from fx.aggregator.admission import Admission, RefusalKind
from fx.transport.grpc import metadata

log = logging.getLogger(__name__)

_STATUS = {
    RefusalKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    RefusalKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    RefusalKind.WRONG_FEDERATION: grpc.StatusCode.FAILED_PRECONDITION,
}

# A collaborator asks for the experiment description to learn *how* its plan
# differs, so that call alone skips the federation-id check (identity still applies).
_PLAN_AGNOSTIC = {metadata.method_path(metadata.GET_EXPERIMENT_DESCRIPTION)}


class AdmissionInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, admission: Admission) -> None:
        self._admission = admission

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or not details.method.startswith(f"/{metadata.SERVICE}/"):
            return handler
        check_federation = details.method not in _PLAN_AGNOSTIC

        def admit(context: grpc.ServicerContext) -> None:
            header = metadata.RequestHeader.from_metadata(context.invocation_metadata())
            pem = context.auth_context().get("x509_pem_cert")
            refusal = self._admission.check(
                sender=header.sender,
                federation_id=header.federation_id,
                peer_certificate_pem=pem[0] if pem else None,
                check_federation=check_federation,
            )
            if refusal is not None:
                log.warning(
                    "refused %s from %s (%s): %s",
                    details.method,
                    header.sender or "?",
                    context.peer(),
                    refusal.reason,
                )
                context.abort(_STATUS[refusal.kind], refusal.reason)

        return _wrap(handler, admit)


def _wrap(handler: Any, admit: Callable[[grpc.ServicerContext], None]) -> Any:
    def guarded(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            admit(context)
            return behavior(request, context)

        return call

    def guarded_stream(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            admit(context)
            yield from behavior(request, context)

        return call

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(guarded(handler.unary_unary), **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(guarded_stream(handler.unary_stream), **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(guarded(handler.stream_unary), **kwargs)
    return grpc.stream_stream_rpc_method_handler(guarded_stream(handler.stream_stream), **kwargs)
