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

And ``receive_first(weight) -> receiver | None``: a receiver of chunks
(``feed``, ``finish``, ``discard``, like
:class:`fx.tensors.staging.UpdateStager`) that folds the round's first update
into the state as it arrives, instead of after it was staged; its ``finish()``
is a :class:`FoldedUpdate`, which :meth:`Aggregation.add` then commits. None
when the round already has an update or is receiving one. The aggregator's
gRPC server uses it when present (FedAvg has it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from numpy.typing import NDArray

__all__ = ["Aggregation", "FoldedUpdate"]


class FoldedUpdate(Mapping[str, NDArray[Any]]):
    """An update already folded into an aggregation's state as it arrived, checked
    on arrival (names, dtypes, shapes, every byte, NaN/Inf) and waiting for
    :meth:`Aggregation.add` to commit it. It holds no arrays: as a mapping it is empty.
    """

    def __init__(self, receiver: object) -> None:
        self.receiver = receiver

    def __getitem__(self, name: str) -> NDArray[Any]:
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


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
