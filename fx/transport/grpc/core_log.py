"""gRPC core's own log lines, turned into ``logging`` records.

gRPC's C core reports a refused TLS handshake (a client certificate from
another CA, expired, or of the wrong role) before any Python code sees the
call, and only by printing to the process's stderr, file descriptor 2::

    I1123 07:38:20.388313   13873 ssl_transport_security.cc:2563] Handshake failed
    with error SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:
    CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate

(one line). :func:`capture_core_log` routes descriptor 2 through a pipe that a
daemon thread reads: a core line becomes a record of the ``grpc.core`` logger
(a refused handshake at WARNING, with its reason and likely cause; anything
else at a lower level), every other line is copied to the real stderr unchanged.
Python's own ``sys.stderr`` (tracebacks, rich output, the console log handler)
is pointed straight at the real stderr meanwhile, so it never waits on the
thread, and the thread can log without writing into its own pipe.

Nothing happens on import: ``fx aggregator start`` installs it for the
lifetime of its server. Leaving the block restores descriptor 2 and copies out
whatever is still in the pipe; only a line written by C code in the instant
before the process aborts can be lost.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import logging
import os
import queue
import re
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

log = logging.getLogger("grpc.core")

_STDERR = 2
_READ_BYTES = 1 << 16
_JOIN_S = 5.0

# absl (gRPC >= 1.63): "I1123 07:38:20.388313   13873 ssl_transport_security.cc:2563] ..."
# gpr_log (older):     "E1123 07:38:20.388313000 140213 src/core/tsi/ssl_transport_...:1446] ..."
_CORE_LINE = re.compile(
    r"(?P<severity>[IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+\s+"
    r"(?P<file>[\w./+-]+):(?P<line>\d+)\] ?(?P<message>.*)"
)
# absl prints this once, before gRPC has configured its logging.
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {
    "I": logging.DEBUG,
    "W": logging.INFO,
    "E": logging.INFO,
    "F": logging.CRITICAL,  # gRPC aborts the process right after
}
_HANDSHAKE_FAILED = re.compile(
    r"Handshake failed with (?:fatal )?error (?P<error>\w+)(?:: (?P<detail>.*))?"
)
# "error:1000007d:SSL routines:OPENSSL_internal:" (BoringSSL),
# "error:0A000086:SSL routines::" (OpenSSL 3)
_OPENSSL_PREFIX = re.compile(r"^error:[0-9A-Fa-f]+:[^:]*:[^:]*:")
# What a verification error most likely means in a federation, by a fragment of its reason.
_LIKELY_CAUSES = (
    ("unable to get local issuer certificate", "a certificate from another CA"),
    ("self signed certificate", "a certificate from another CA"),
    ("self-signed certificate", "a certificate from another CA"),
    ("certificate signature failure", "a certificate from another CA"),
    ("certificate has expired", "an expired certificate"),
    ("certificate is not yet valid", "a certificate not valid yet (check the clocks)"),
    ("unsupported certificate purpose", "a certificate of the wrong role"),
    ("certificate revoked", "a revoked certificate"),
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "no client certificate"),
    ("WRONG_VERSION_NUMBER", "a peer that does not speak TLS (network.tls false on its side?)"),
    ("HTTP_REQUEST", "a peer that does not speak TLS (network.tls false on its side?)"),
)


def describe_core_line(text: str) -> tuple[int, str, str, int] | None:
    """(level, message, source file, source line) for a line of gRPC core's log, or
    None when ``text`` is not one. A failed TLS handshake becomes a WARNING that
    names the reason and its likely cause."""
    if text.startswith(_ABSL_PREAMBLE):
        return logging.DEBUG, text, "absl", 0
    match = _CORE_LINE.fullmatch(text)
    if match is None:
        return None
    level, message = _SEVERITY[match["severity"]], match["message"]
    handshake = _HANDSHAKE_FAILED.match(message)
    if handshake is not None:
        level, message = logging.WARNING, _handshake_message(handshake)
    return level, message, match["file"], int(match["line"])


def _handshake_message(match: re.Match[str]) -> str:
    reason = _OPENSSL_PREFIX.sub("", match["detail"] or match["error"]).strip()
    cause = next((cause for key, cause in _LIKELY_CAUSES if key in reason), None)
    if "ALERT" in reason:  # the peer sent a TLS alert: it was the one refusing
        return f"TLS handshake failed: the peer refused this side's certificate ({reason})"
    likely = f" (likely {cause})" if cause else ""
    return f"TLS handshake refused: {reason}{likely}"


class _CoreLogPump:
    """Descriptor 2 -> pipe -> pump thread -> the real stderr, or (core lines) a queue ->
    emitter thread -> ``log``.

    The pump only ever writes to the real stderr, so it always drains the pipe; a
    handler that still writes to descriptor 2 (one bound to the old ``sys.stderr``)
    blocks at worst the emitter, never the reader of its own output.
    """

    def __init__(self) -> None:
        if sys.stderr is not None:
            sys.stderr.flush()
        self._real_fd = os.dup(_STDERR)
        read_fd, write_fd = os.pipe()
        self._read_fd = read_fd
        os.dup2(write_fd, _STDERR)
        os.close(write_fd)
        self._saved_stderr: TextIO | None = None
        if _writes_to_fd(sys.stderr, _STDERR):
            # Python's own writes skip the pipe: they never wait for the pump.
            self._saved_stderr = sys.stderr
            sys.stderr = _text_stream(self._real_fd, like=sys.stderr)
            if faulthandler.is_enabled():
                faulthandler.enable(sys.stderr)
        self._records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._pump, name="fx-grpc-core-log", daemon=True),
            threading.Thread(target=self._emit, name="fx-grpc-core-log-emit", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Restore descriptor 2, copy out what is left in the pipe, restore ``sys.stderr``."""
        if self._saved_stderr is not None:
            sys.stderr.flush()
        # The pipe's last writer goes away: the pump reads to the end, then both threads stop.
        os.dup2(self._real_fd, _STDERR)
        for thread in self._threads:
            thread.join(_JOIN_S)
        if self._saved_stderr is not None:
            replaced, sys.stderr = sys.stderr, self._saved_stderr
            if faulthandler.is_enabled():
                faulthandler.enable(sys.stderr)
            replaced.close()  # a stale reference now fails loudly; the descriptor stays open
        if not any(thread.is_alive() for thread in self._threads):
            os.close(self._read_fd)  # (else a child process still holds the pipe open)
            os.close(self._real_fd)

    def _pump(self) -> None:
        pending = b""
        try:
            while data := os.read(self._read_fd, _READ_BYTES):
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    self._dispatch(line + b"\n")
                if pending and not _may_start_core_line(pending):
                    self._dispatch(pending)  # a prompt or progress output: not held back
                    pending = b""
            if pending:
                self._dispatch(pending)
        finally:
            self._records.put(None)

    def _dispatch(self, raw: bytes) -> None:
        try:
            described = describe_core_line(raw.decode("utf-8", "replace").rstrip("\r\n"))
            if described is None:
                _write_all(self._real_fd, raw)
                return
            level, message, path, line = described
            if log.isEnabledFor(level):
                self._records.put(log.makeRecord(log.name, level, path, line, message, (), None))
        except OSError:  # the terminal went away: keep draining the pipe
            pass

    def _emit(self) -> None:
        while (record := self._records.get()) is not None:
            log.handle(record)  # handlers report their own errors (Handler.handleError)


@contextlib.contextmanager
def capture_core_log() -> Iterator[None]:
    """While in the block, gRPC core's stderr lines become ``grpc.core`` log records.

    Does nothing where descriptors cannot be redirected this way (not POSIX).
    """
    if os.name != "posix":
        yield
        return
    pump = _CoreLogPump()
    try:
        yield
    finally:
        pump.close()


def _may_start_core_line(partial: bytes) -> bool:
    """Whether an unfinished line could still become a core line (held until its newline)."""
    return partial[:1] in (b"I", b"W", b"E", b"F") and partial[1:2] in (b"", *_DIGITS)


_DIGITS = tuple(str(digit).encode() for digit in range(10))


def _writes_to_fd(stream: TextIO | None, fd: int) -> bool:
    try:
        return stream is not None and stream.fileno() == fd
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def _text_stream(fd: int, *, like: TextIO) -> TextIO:
    binary = open(fd, "wb", buffering=0, closefd=False)  # noqa: SIM115 (closed in close())
    return io.TextIOWrapper(
        binary,
        encoding=like.encoding,
        errors=like.errors or "backslashreplace",
        # Whole lines in one write each: print() writes its text and its "\n" separately,
        # and the pump writes to the same descriptor, so write-through could split a line.
        line_buffering=True,
        write_through=False,
    )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
