"""The durability work of closed rounds, done in order on one background thread.

Closing a round writes the new global model twice (save/last.safetensors and
the checkpoint), fsyncs both and commits the round to state.db: for a 100 MB
model that is a few hundred milliseconds. The aggregator opens the next round
first and hands those writes to a :class:`Persister`, so collaborators download
the new model while it is being written (docs/performance.md).

Jobs run one at a time in submission order, so checkpoints are never written
out of order. A crash before a job finishes loses nothing that matters: the
previous checkpoint is intact and the restarted aggregator redoes the round.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Persister:
    """A single worker thread running submitted jobs in order.

    Its bookkeeping is guarded by ``condition`` (the aggregator's own), which is
    notified whenever a job finishes, so the owner can wait for
    ``pending == 0`` with ``condition.wait()`` while holding it. Jobs must not
    take ``condition`` themselves for long: the owner may hold it while it waits.
    """

    def __init__(self, condition: threading.Condition, *, name: str = "fx-persist") -> None:
        self._condition = condition
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.pending = 0  # submitted and not finished; read under ``condition``
        self.error: BaseException | None = None  # the first job failure, if any
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job``; call with ``condition`` held."""
        self.pending += 1
        self._jobs.put(job)

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued jobs, then stop the thread (call without ``condition`` held)."""
        self._jobs.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except BaseException as exc:  # reported by the owner; later jobs still run
                log.exception("could not persist a closed round")
                with self._condition:
                    if self.error is None:
                        self.error = exc
            finally:
                # Let go of what the job holds (models) now, not when the next one comes.
                job = None
                with self._condition:
                    self.pending -= 1
                    self._condition.notify_all()
