"""The errors fx raises, and the exit codes the CLI turns them into.

Every failure a user can cause is an :class:`FxError`. The CLI prints its
``message`` and ``hint`` on one line each and exits with ``exit_code``; no
traceback. Anything else is a bug and is shown with a traceback.

    FxError                      exit 1
    ├── WorkspaceError           exit 2   no workspace, refuses to overwrite, bad template
    ├── PlanError                exit 3   plan/cols/data file fails validation
    ├── PkiError                 exit 4   missing/invalid certificates, CSR, bundle, CRL
    ├── NetworkError             exit 5   port in use, aggregator unreachable
    │   └── AggregatorUnreachable
    ├── RefusedError             exit 6   the peer refused us (identity, plan mismatch)
    └── TaskError                exit 7   the template's model/data code failed
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes, documented in docs/architecture.md."""

    OK = 0
    ERROR = 1
    WORKSPACE = 2
    PLAN = 3
    PKI = 4
    NETWORK = 5
    REFUSED = 6
    TASK = 7
    INTERRUPTED = 130


class FxError(Exception):
    """Base class: an expected failure with a message and a hint for the user."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"


class WorkspaceError(FxError):
    exit_code = ExitCode.WORKSPACE


class PlanError(FxError):
    exit_code = ExitCode.PLAN


class PkiError(FxError):
    exit_code = ExitCode.PKI


class NetworkError(FxError):
    exit_code = ExitCode.NETWORK


class AggregatorUnreachable(NetworkError):
    pass


class RefusedError(FxError):
    exit_code = ExitCode.REFUSED


class TaskError(FxError):
    exit_code = ExitCode.TASK
