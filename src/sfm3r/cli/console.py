"""The terminal of a run: log records, progress bars and native (glog) output through ONE rich Console.

Log lines and bars drawn by two consoles overwrite each other (a line glued to a bar, cut at the width).
Here the RichHandler and the Progress share one Console, so rich prints every record above the live bars.
pycolmap's C++ code writes glog lines straight to file descriptor 2, past Python: during a run fd 2 is a
pipe whose lines become `sfm3r.native` log records (glog I -> DEBUG, W -> WARNING, E/F -> ERROR), while
the Console writes to a duplicate of the real stderr.

When stderr is not a terminal (CI, pipes, files) there are no bars: records are plain timestamped lines
and each stage logs one line when it ends.

The library reports progress as `(stage, done, total)` calls (pipelines.reconstruct.Progress):
total 0 = started, size not known yet; done == total > 0 = finished; a stage "alignment/coarse" updates
the row "alignment" and shows "coarse" beside it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
# glog: "I20261206 20:20:00.123456 12345 file.cc:123] message"
_GLOG_LINE = re.compile(r"^([IWEF])\d{4,8} [\d:.]+\s+\d+ ([^\]]+)\] ?(.*)$")
_GLOG_LEVELS = {"I": logging.DEBUG, "W": logging.WARNING, "E": logging.ERROR, "F": logging.ERROR}
_LOGGERS = ("sfm3r", "py.warnings")  # py.warnings: Python warnings, via logging.captureWarnings


_PERCENT_STAGES = ("alignment",)  # stages whose progress is a percentage, not a count of units


def _count_text(stage: str, done: int, total: int) -> str:
    if total <= 0:
        return ""
    return f"{100 * done // total} %" if stage in _PERCENT_STAGES else f"{done}/{total}"


class _LogFileHandler(logging.FileHandler):
    """OUT/log.txt; when it cannot be written (disk full) it stops quietly instead of printing a traceback
    per record: the run's own write fails moments later with one clear line."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 -- logging's name
        self.setLevel(logging.CRITICAL + 1)


class _EtaColumn(TimeRemainingColumn):
    """"eta 0:01:02" while a stage with a known size runs; blank otherwise."""

    def render(self, task):
        if task.finished or not task.total:
            return Text("")
        remaining = super().render(task)
        return Text("eta ", style="dim") + remaining


@dataclass
class _Row:
    task: TaskID
    started: float
    total: int = 0
    finished: bool = False
    sized: bool = False  # an update gave a size before the end (else the end's 1/1 is not shown)


@dataclass
class RunDisplay:
    """The progress callback of one run and its stage list (a bar per stage on a terminal)."""

    console: Console
    bars: bool  # False: no live display (not a terminal, or --quiet)
    log_stage_ends: bool = True  # without bars: one INFO line per finished stage
    progress: Progress | None = None
    rows: dict[str, _Row] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    run_task: TaskID | None = None

    def __post_init__(self) -> None:
        if self.bars:
            self.progress = Progress(
                SpinnerColumn(finished_text="[green]✓"),
                TextColumn("{task.description:<16}"),
                BarColumn(bar_width=None),
                TextColumn("{task.fields[count]:>11}"),
                TextColumn("[dim]{task.fields[detail]}"),
                TimeElapsedColumn(),
                _EtaColumn(),
                console=self.console,
                expand=True,
            )
            # the whole run's elapsed time, on top of the stage list
            self.run_task = self.progress.add_task("run", total=None, count="", detail="all stages")

    def __call__(self, stage: str, done: int, total: int) -> None:
        """The progress callback: `stage` (or "stage/detail"), `done` of `total` units."""
        name, _, detail = stage.partition("/")
        with self.lock:
            row = self.rows.get(name)
            if row is None or row.finished and done < max(total, 1):  # a new stage (or a stage run again)
                task = self.progress.add_task(name, total=None, count="", detail="") if self.progress else TaskID(0)
                row = self.rows[name] = _Row(task=task, started=time.perf_counter())
            finished = total > 0 and done >= total and not detail and not row.finished
            row.total = total
            row.sized |= 0 <= done < total
            if self.progress is not None:
                self.progress.update(
                    row.task, completed=done, total=total if total > 0 else None,
                    count=_count_text(name, done, total) if row.sized else "", detail=detail,
                )  # fmt: skip
            if finished:
                self._mark_finished(name, row)

    def _mark_finished(self, name: str, row: _Row) -> None:
        row.finished = True
        if self.progress is not None:
            task = self.progress.tasks[[t.id for t in self.progress.tasks].index(row.task)]
            total = task.total or 1
            count = _count_text(name, int(total), int(total)) if row.sized else ""
            self.progress.update(row.task, total=total, completed=total, detail="", count=count)
        elif self.log_stage_ends:
            logging.getLogger("sfm3r.progress").info("%s done in %.1f s", name, time.perf_counter() - row.started)

    def close(self) -> None:
        with self.lock:
            for name, row in self.rows.items():
                if not row.finished:
                    self._mark_finished(name, row)
            if self.progress is not None and self.run_task is not None:
                self.progress.update(self.run_task, total=1, completed=1, detail="")


def _stderr_console() -> tuple[Console, IO[str] | None]:
    """A Console on a duplicate of fd 2 (so it still reaches the terminal while fd 2 is captured)."""
    try:
        stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
    except (OSError, ValueError, AttributeError):  # no real fd 2 (e.g. click's test runner): use sys.stderr
        return Console(stderr=True), None
    return Console(file=stream), stream


@contextmanager
def _capture_fd2(logger: logging.Logger) -> Iterator[None]:
    """Lines written to fd 2 (pycolmap's glog, C libraries) become records of `logger` until the block ends."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                line = line.rstrip()
                if not line:
                    continue
                glog = _GLOG_LINE.match(line)
                if glog:
                    logger.log(_GLOG_LEVELS[glog[1]], "%s (%s)", glog[3], glog[2].strip())
                else:
                    logger.info("%s", line)

    reader = threading.Thread(target=pump, name="sfm3r-fd2", daemon=True)
    reader.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # the pipe's last write end closes: the reader sees EOF
        os.close(saved)
        reader.join(timeout=5)


@contextmanager
def run_console(*, verbose: bool = False, quiet: bool = False, log_file: Path | None = None) -> Iterator[RunDisplay]:
    """Set up logging and progress for one run; yields the progress callback (a RunDisplay).

    Terminal: rich records above a live stage list. Otherwise: plain lines. `log_file` gets every record
    (DEBUG, glog lines included), appended.
    """
    console, stream = _stderr_console()
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if console.is_terminal:
        handler: logging.Handler = RichHandler(
            console=console, show_path=False, rich_tracebacks=False, log_time_format="[%X]", markup=False
        )
    else:
        handler = logging.StreamHandler(console.file)
        handler.setFormatter(logging.Formatter(_PLAIN_FORMAT, datefmt="%H:%M:%S"))
    handler.setLevel(level)
    handlers = [handler]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = _LogFileHandler(log_file, mode="a", encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter(_FILE_FORMAT))
        handlers.append(file_handler)
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.propagate = False  # one copy of each record, whatever the root logger has
        for h in handlers:
            lg.addHandler(h)
    logging.captureWarnings(True)
    display = RunDisplay(console=console, bars=console.is_terminal and not quiet, log_stage_ends=not quiet)
    try:
        with _capture_fd2(logging.getLogger("sfm3r.native")):
            if display.progress is not None:
                with display.progress:
                    try:
                        yield display
                    finally:
                        display.close()
            else:
                try:
                    yield display
                finally:
                    display.close()
    finally:
        logging.captureWarnings(False)
        for lg, lvl, propagate in saved:
            for h in handlers:
                lg.removeHandler(h)
            lg.setLevel(lvl)
            lg.propagate = propagate
        for h in handlers[1:]:
            h.close()
        if stream is not None:
            stream.flush()
            stream.close()


def summary_tables(result) -> list:
    """The end-of-run tables: time per stage, then what came out (counts, errors, output paths).

    `result` is a pipelines.reconstruct.ReconstructResult (not imported: this module stays light).
    """
    import math

    from rich.table import Table

    counts = result.counts
    stages = Table(title="Stages", title_justify="left", show_edge=False)
    stages.add_column("stage")
    stages.add_column("time", justify="right")
    stages.add_column("result")
    notes = {
        "images": f"{len(result.images)} images",
        "features": _features_note(counts.get("features")),
        "pairs": (lambda p: f"{p['pairs']} pairs ({p['graph']})" if p else "")(counts.get("pairs")),
        "putative_matching": (lambda m: f"{m['total']} pairs ({m['cached']} cached)" if m else "")(
            counts.get("putative_matching")
        ),
        "self_calibration": f"{len(counts.get('self_calibrated_focal') or {})} focal(s) estimated"
        if "self_calibrated_focal" in counts else "",
        "matching": (lambda m: f"{m['verified']} verified of {m['total']} ({m['cached']} cached)" if m else "")(
            counts.get("matching")
        ),
        "alignment": (lambda c: f"{c['registered']} images, {c['points']} points" if c else "")(counts.get("scene")),
    }
    for stage, seconds in result.timings.items():
        if stage != "total":
            stages.add_row(stage, f"{seconds:.1f} s", notes.get(stage, ""))
    if "total" in result.timings:
        stages.add_row("[bold]total", f"[bold]{result.timings['total']:.1f} s", "", end_section=True)
    tables = [stages]
    out = Table(title="Result", title_justify="left", show_edge=False, show_header=False)
    out.add_column("what", style="bold")
    out.add_column("value")
    out.add_row("backend", result.backend.value)
    scene = counts.get("scene")
    if scene:
        error = scene["mean_reprojection_error_px"]
        out.add_row("registered images", f"{scene['registered']} of {scene['images']}")
        out.add_row("cameras", str(scene["cameras"]))
        out.add_row("3D points", str(scene["points"]))
        out.add_row("mean track length", f"{scene['mean_track_length']:.2f} images")
        out.add_row("mean reprojection error", "n/a" if math.isnan(error) else f"{error:.2f} px")
    run = result.run
    paths = (("run folder", run.root), ("COLMAP model", run.sparse_dir), ("point cloud", run.ply_path),
             ("nerfstudio", run.root / "transforms.json"), ("preview", run.preview_path),
             ("pairs", run.root / "pairs.txt"), ("log", run.log_path))  # fmt: skip
    for label, path in paths:
        if Path(path).exists():
            out.add_row(label, str(path))
    owned = run.manifest.files if run.manifest is not None else ()
    downscaled = sorted({rel.split("/")[0] for rel in owned if re.fullmatch(r"images_[0-9]+/.+", rel)},
                        key=lambda folder: int(folder.removeprefix("images_")))  # fmt: skip
    if downscaled:
        out.add_row("downscaled images", ", ".join(f"{folder}/" for folder in downscaled))
    tables.append(out)
    return tables


def _features_note(features: dict | None) -> str:
    if not features:
        return ""
    return f"{features['total']} images ({features['cached']} cached)"


def print_summary(result) -> None:
    """Print the end-of-run tables on stdout (the log and bars are on stderr)."""
    console = Console()
    for table in summary_tables(result):
        console.print(table)
    unregistered = (result.counts.get("scene") or {}).get("unregistered")
    if unregistered:  # a line of its own: the one thing to act on
        console.print(f"Not registered: {', '.join(unregistered)}", markup=False, highlight=False, style="bold yellow")
        from sfm3r.pipelines.summary import left_out_line  # loaded by the run already; not at CLI start

        for component in result.counts["scene"].get("left_out", ()):
            console.print("  " + left_out_line(component), markup=False, highlight=False, style="yellow")
