"""Who may talk to the aggregator: checked on every request, before any handler runs.

A request is admitted when the identity in the peer's certificate equals the
sender it claims, that sender is a collaborator in cols.yaml, the certificate
is not revoked, and the request names this federation.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass

from fx.errors import FxError

log = logging.getLogger(__name__)


class RefusalKind(enum.Enum):
    UNAUTHENTICATED = "unauthenticated"  # who are you? (no/unknown/mismatched identity)
    PERMISSION_DENIED = "permission_denied"  # known, but not allowed (revoked, not a member)
    WRONG_FEDERATION = "wrong_federation"  # a different plan


@dataclass(frozen=True)
class Refusal:
    kind: RefusalKind
    reason: str


@dataclass(frozen=True)
class PeerCertificate:
    identities: tuple[str, ...]
    serial: int


def _parse_certificate(pem: bytes) -> PeerCertificate:
    from fx.pki.identity import certificate_identities, certificate_serial

    return PeerCertificate(tuple(certificate_identities(pem)), certificate_serial(pem))


# Each collaborator presents the same certificate on every call: parse it once.
_cached_parse = functools.lru_cache(maxsize=1024)(_parse_certificate)


class Admission:
    def __init__(
        self,
        *,
        collaborators: Collection[str],
        federation_id: str,
        is_revoked: Callable[[int], bool],
        tls: bool = True,
    ) -> None:
        """``is_revoked(serial)`` may raise FxError when it cannot tell (an unreadable
        or forged CRL): the request is then refused, never admitted."""
        self._collaborators = frozenset(collaborators)
        self._federation_id = federation_id
        self._is_revoked = is_revoked
        self._tls = tls

    def check(
        self,
        *,
        sender: str,
        federation_id: str,
        peer_certificate_pem: bytes | None,
        check_federation: bool = True,
    ) -> Refusal | None:
        """None when the request is admitted, else why not."""
        if not sender:
            return Refusal(RefusalKind.UNAUTHENTICATED, "request carries no fx-sender header")
        if self._tls:
            if peer_certificate_pem is None:
                return Refusal(RefusalKind.UNAUTHENTICATED, "no client certificate was presented")
            peer = _cached_parse(peer_certificate_pem)
            if sender not in peer.identities:
                return Refusal(
                    RefusalKind.UNAUTHENTICATED,
                    f"certificate identity {', '.join(peer.identities) or '(none)'} "
                    f"does not match claimed sender {sender!r}",
                )
            try:
                revoked = self._is_revoked(peer.serial)
            except FxError as exc:  # fail closed: an unknown status is not "not revoked"
                return Refusal(
                    RefusalKind.PERMISSION_DENIED,
                    f"cannot check whether the certificate of {sender!r} is revoked: {exc.message}",
                )
            if revoked:
                return Refusal(
                    RefusalKind.PERMISSION_DENIED,
                    f"certificate of {sender!r} (serial {peer.serial:x}) is revoked",
                )
        if sender not in self._collaborators:
            return Refusal(
                RefusalKind.PERMISSION_DENIED, f"{sender!r} is not a collaborator in plan/cols.yaml"
            )
        if check_federation and federation_id != self._federation_id:
            return Refusal(
                RefusalKind.WRONG_FEDERATION,
                f"plan hash {federation_id[:12] or '(none)'} differs from the aggregator's "
                f"{self._federation_id[:12]}",
            )
        return None
