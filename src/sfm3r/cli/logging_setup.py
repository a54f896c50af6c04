"""Logging and progress display for the command line (the only place that configures them)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _LogFileHandler(logging.FileHandler):
    """OUT/log.txt; when it cannot be written (disk full) it stops quietly instead of printing a traceback
    per record: the run's own write fails moments later with one clear line."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 -- logging's name
        self.setLevel(logging.CRITICAL + 1)


def configure_logging(verbose: bool = False, quiet: bool = False, log_file: Path | None = None) -> logging.Handler | None:
    """Send sfm3r's log records to the terminal (rich) and, when given, to `log_file` (appended).

    Returns the file handler so the caller can detach it when the run ends.
    """
    root = logging.getLogger("sfm3r")
    root.setLevel(logging.DEBUG)
    console = next((h for h in root.handlers if isinstance(h, RichHandler)), None)
    if console is None:
        console = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
        root.addHandler(console)
    console.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    file_handler = None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = _LogFileHandler(log_file, mode="a", encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        root.addHandler(file_handler)
    return file_handler


def detach_handler(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger("sfm3r").removeHandler(handler)
        handler.close()


@contextmanager
def rich_progress(enabled: bool = True) -> Iterator:
    """Yield a progress callback `(stage, done, total)` that draws one rich bar per stage."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    progress = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    with progress:
        yield update
