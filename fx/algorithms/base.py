"""The protocol every aggregation algorithm meets.

An aggregation is *streaming*: the aggregator calls :meth:`Aggregation.reset`
with the round's global model, :meth:`Aggregation.add` once per accepted
update as it arrives, and :meth:`Aggregation.result` when the round closes.
Memory stays O(model) however many collaborators there are: an implementation
folds each update into its state and keeps no reference to it.

An implementation may also offer ``take_result() -> dict[str, NDArray]``: the
same values as :meth:`Aggregation.result`, built in its own state's memory,
leaving the state spent until the next :meth:`Aggregation.reset`. The
aggregator uses it when present (FedAvg has it), so closing a round allocates
no second copy of the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from numpy.typing import NDArray

__all__ = ["Aggregation"]


@runtime_checkable
class Aggregation(Protocol):
    """A streaming aggregation of weighted model updates."""

    def reset(self, reference: Mapping[str, NDArray[Any]]) -> None:
        """Start a round whose updates must match ``reference`` (names, dtypes, shapes).

        ``reference`` is the current global model; implementations may keep
        what they need of it (a copy, never a reference the caller may mutate).
        """
        ...

    def add(self, update: Mapping[str, NDArray[Any]], weight: float) -> None:
        """Fold one update with ``weight`` (> 0, e.g. its number of samples) into the round.

        An implementation **may consume the update**: it is allowed to modify the
        arrays in place (to avoid full-size temporaries), so the caller must not
        use them afterwards. An update that does not match the reference raises
        ``ValueError`` and leaves the round's state unchanged.
        """
        ...

    def result(self) -> dict[str, NDArray[Any]]:
        """The aggregated model: same names, dtypes and shapes as the reference.

        Does not change the state: more updates may still be added.
        """
        ...

    @property
    def count(self) -> int:
        """How many updates were added since the last :meth:`reset`."""
        ...
