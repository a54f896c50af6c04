"""Per-item CPU work on every core, in worker processes: for library calls that hold the GIL.

pycolmap's SIFT extraction holds the GIL (two threads calling it take as long as one), so the classic
backend extracts the images of a run in a pool of processes, one per core. The workers are started with
``spawn`` (a fresh interpreter: nothing of the parent, e.g. torch's thread pool, is inherited) and import
only the module of the function they run; they ignore SIGINT, so that Ctrl-C reaches the parent alone,
which stops handing out work and keeps every result it received.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

__all__ = ["map_in_processes", "usable_cores"]

Item = TypeVar("Item")
Result = TypeVar("Result")

MIN_ITEMS_FOR_A_POOL = 3  # below this, starting the workers (~0.5 s each) costs more than it saves


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def map_in_processes(
    function: Callable[[Item], Result],  # a module-level function (workers import it by name)
    items: Iterable[Item],
    *,
    workers: int | None = None,  # None: one per usable core
    min_items: int = MIN_ITEMS_FOR_A_POOL,
) -> Iterator[Result]:
    """``function(item)`` for each item, yielded in the order of `items` as they finish.

    Runs in this process when one worker is asked for or there are fewer than `min_items` items; an
    exception raised by `function` in a worker is raised here (the remaining items are cancelled).
    """
    items = list(items)
    count = min(workers or usable_cores(), len(items))
    if count <= 1 or len(items) < min_items:
        yield from map(function, items)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=count, mp_context=context, initializer=_ignore_sigint) as pool:
        futures = [pool.submit(function, item) for item in items]
        try:
            for future in futures:
                yield future.result()
        finally:  # an error or an interrupt: do not start the items still queued
            for future in futures:
                future.cancel()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
