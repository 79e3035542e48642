"""gRPC core's stderr lines -> log records (fx.transport.grpc.core_log).

The redirection is tested in a child process: it rewires the process's file
descriptor 2, which must not happen to the test runner itself.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fx.transport.grpc.core_log import describe_core_line

# Lines as gRPC 1.6x+ (absl) and older releases (gpr_log) print them.
FOREIGN_CA = (
    "I1123 07:38:20.388313   13873 ssl_transport_security.cc:2563] Handshake failed with error "
    "SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: "
    "unable to get local issuer certificate"
)
EXPIRED_OLD_FORMAT = (
    "E1123 07:38:20.388313000 140213 src/core/tsi/ssl_transport_security.cc:1446] Handshake "
    "failed with fatal error SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
    "CERTIFICATE_VERIFY_FAILED: certificate has expired"
)


def test_a_refused_handshake_becomes_a_warning_with_reason_and_likely_cause() -> None:
    assert describe_core_line(FOREIGN_CA) == (
        logging.WARNING,
        "TLS handshake refused: CERTIFICATE_VERIFY_FAILED: unable to get local issuer "
        "certificate (likely a certificate from another CA)",
        "ssl_transport_security.cc",
        2563,
    )
    described = describe_core_line(EXPIRED_OLD_FORMAT)
    assert described is not None
    assert described[:2] == (
        logging.WARNING,
        "TLS handshake refused: CERTIFICATE_VERIFY_FAILED: certificate has expired "
        "(likely an expired certificate)",
    )


@pytest.mark.parametrize(
    ("reason", "cause"),
    [
        ("unsupported certificate purpose", "a certificate of the wrong role"),
        ("certificate is not yet valid", "a certificate not valid yet (check the clocks)"),
    ],
)
def test_likely_causes(reason: str, cause: str) -> None:
    line = FOREIGN_CA.replace("unable to get local issuer certificate", reason)
    described = describe_core_line(line)
    assert described is not None and described[1].endswith(f"{reason} (likely {cause})")


def test_a_tls_alert_means_the_peer_refused_us() -> None:
    line = (
        "I1123 07:38:20.388313   13873 ssl_transport_security.cc:2563] Handshake failed with "
        "error SSL_ERROR_SSL: error:10000418:SSL routines:OPENSSL_internal:"
        "TLSV1_ALERT_UNKNOWN_CA"
    )
    described = describe_core_line(line)
    assert described is not None
    assert described[:2] == (
        logging.WARNING,
        "TLS handshake failed: the peer refused this side's certificate (TLSV1_ALERT_UNKNOWN_CA)",
    )


def test_other_core_lines_stay_below_warning() -> None:
    info = "I1123 07:38:20.388313   13873 chttp2_transport.cc:1234] ipv4:127.0.0.1:1: closed"
    error = "E1123 07:39:16.704394   14749 ssl_transport_security.cc:3238] No match found"
    fatal = "F1123 07:39:16.704394   14749 sync.cc:12] assertion failed"
    assert describe_core_line(info) == (
        logging.DEBUG,
        "ipv4:127.0.0.1:1: closed",
        "chttp2_transport.cc",
        1234,
    )
    assert describe_core_line(error) is not None
    assert describe_core_line(error)[0] == logging.INFO  # type: ignore[index]
    assert describe_core_line(fatal)[0] == logging.CRITICAL  # type: ignore[index]


@pytest.mark.parametrize(
    "line",
    [
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "Error: something went wrong",
        "I1123 is not a timestamp",
        "WARNING  TLS handshake refused: ... (a record rich already rendered)",
        "",
    ],
)
def test_other_lines_are_not_core_lines(line: str) -> None:
    assert describe_core_line(line) is None


CHILD = textwrap.dedent(
    """
    import logging, os, sys
    from fx.transport.grpc.core_log import capture_core_log

    logging.basicConfig(filename=sys.argv[1], level=logging.DEBUG,
                        format="%(levelname)s %(name)s [%(threadName)s] %(message)s")
    # Bound to descriptor 2 before the capture: its output goes through the pipe.
    early = logging.StreamHandler(sys.stderr)
    early.setLevel(logging.WARNING)
    logging.getLogger().addHandler(early)
    CORE = {core!r}.encode()
    with capture_core_log():
        os.write(2, b"a line from C code\\n")
        for _ in range(3000):  # far more than a pipe buffer, interleaved with core lines
            os.write(2, CORE + b"\\n")
            os.write(2, b"x" * 100 + b"\\n")
        print("python stderr", file=sys.stderr)
        os.write(2, b"no newline at the end")
        raise RuntimeError("boom")
    """
)


def test_capture_in_a_process(tmp_path: Path) -> None:
    log_file = tmp_path / "child.log"
    child = subprocess.run(
        [sys.executable, "-c", CHILD.format(core=FOREIGN_CA), str(log_file)],
        capture_output=True,
        text=True,
        timeout=60,  # a deadlock fails here
    )
    assert child.returncode == 1
    err = child.stderr
    # Everything that is not a core line reaches the real stderr, nothing lost.
    assert "a line from C code\n" in err
    assert err.count("x" * 100 + "\n") == 3000
    assert "python stderr\n" in err
    assert "no newline at the end" in err
    assert err.rstrip().endswith("RuntimeError: boom")  # the traceback, after the block
    # No raw core line; each became a record, shown by the early handler as a readable line.
    assert "ssl_transport_security.cc" not in err
    readable = (
        "TLS handshake refused: CERTIFICATE_VERIFY_FAILED: unable to get local issuer "
        "certificate (likely a certificate from another CA)"
    )
    assert err.count(readable + "\n") == 3000
    records = log_file.read_text().splitlines()
    assert records.count(f"WARNING grpc.core [fx-grpc-core-log] {readable}") == 3000


def test_nothing_is_captured_on_import() -> None:
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, fx.transport.grpc.core_log, fx.cli.main; "
            "os.write(2, b'I1123 07:38:20.388313   1 x.cc:1] raw\\n')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    assert child.stderr == "I1123 07:38:20.388313   1 x.cc:1] raw\n"
