"""Console output shared by the commands: rich on a TTY, plain lines otherwise."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console

# soft_wrap: a line per event, never re-wrapped at 80 columns when output is a file.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def warn_loudly(message: str) -> None:
    err_console.print(f"[bold red]WARNING[/]: {message}")


def setup_logging(log_file: Path, *, verbose: bool) -> None:
    """Full detail to ``log_file``; only warnings (or everything with -v) to the console."""
    from rich.logging import RichHandler

    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(log_file, encoding="utf-8")
    file_handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")
    )
    file_handler.setLevel(logging.DEBUG)
    console_handler = RichHandler(
        console=err_console, show_path=False, show_time=False, rich_tracebacks=False
    )
    console_handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [file_handler, console_handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
