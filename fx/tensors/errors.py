"""The one error the tensor codec raises.

:class:`CodecError` is both an :class:`fx.errors.FxError` (so the CLI prints it
without a traceback, e.g. for a corrupt model file) and a :class:`ValueError`
(so callers that only know the standard library can still catch it).
"""

from __future__ import annotations

from fx.errors import FxError


class CodecError(FxError, ValueError):
    """Tensors, chunks or files that cannot be encoded or decoded as they are."""
