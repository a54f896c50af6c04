"""Per-item CPU work on every core, in worker processes: for library calls that hold the GIL.

pycolmap's SIFT extraction holds the GIL (two threads calling it take as long as one), so the classic
backend extracts the images of a run in worker processes, one per core.

The workers are plain ``python -m sfm3r.pipelines.process_pool`` subprocesses, not ``multiprocessing``
ones: a spawned multiprocessing worker imports the caller's ``__main__`` again, which runs the whole
script a second time when a user calls the pipeline from a script without an ``if __name__ ==
"__main__":`` guard, and a forked one inherits torch's thread pool and the progress display's threads.
A worker imports only the modules of the functions it runs, gets one item at a time (pickled over its
stdin with the function's name, the result back over its stdout), and ignores SIGINT, so that Ctrl-C reaches the parent alone,
which stops handing out work and keeps every result it received. Its stderr is the parent's (C library
logs are captured there as usual). A run keeps its workers for all its stages (:class:`WorkerPool`).
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

__all__ = ["WorkerPool", "map_in_processes", "usable_cores"]

Item = TypeVar("Item")
Result = TypeVar("Result")

MIN_ITEMS_FOR_A_POOL = 3  # below this, starting the workers (~0.3 s each) costs more than it saves
# At most this many workers by default: each holds an interpreter, pycolmap and one image's SIFT scratch
# (~150-300 MB at 1600 px), so a 64-core machine should not start 64 of them for a photo folder.
MAX_DEFAULT_WORKERS = 8
REAPER_THREAD = "sfm3r-reap-workers"  # the thread that waits for a closed pool's workers to exit
_HEADER = struct.Struct("<Q")  # byte length of the pickle that follows


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def map_in_processes(
    function: Callable[[Item], Result],  # a module-level function (the workers import it by name)
    items: Iterable[Item],
    *,
    workers: int | None = None,  # None: one per usable core, at most MAX_DEFAULT_WORKERS
    min_items: int = MIN_ITEMS_FOR_A_POOL,
    pool: WorkerPool | None = None,  # a run's pool, kept for its next map; None: workers for this map alone
) -> Iterator[Result]:
    """``function(item)`` for each item, yielded in the order of `items` as they finish.

    Runs in this process when one worker is asked for or there are fewer than `min_items` items. An
    exception raised by `function` is raised here; the items not started yet are then not started.
    """
    if pool is not None:
        yield from pool.map(function, items, min_items=min_items)
        return
    with WorkerPool(workers) as own:
        yield from own.map(function, items, min_items=min_items)


class WorkerPool:
    """Worker processes kept for every map of a run (SIFT, the self-calibration's F, the verification), so
    that each stage does not pay the workers' start (~0.3 s: an interpreter, numpy and pycolmap) again.

    Started on the first map that needs them, stopped by :meth:`close` (or the ``with`` block's end). Any
    module-level function can be mapped; a worker imports its module on first use. A worker that fails
    (crash, broken pipe) or a map stopped early ends the processes; the next map starts fresh ones.
    """

    def __init__(self, workers: int | None = None) -> None:  # None: one per usable core, at most 8
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1 (or None: one per core), got {workers}")
        self.size = workers or min(usable_cores(), MAX_DEFAULT_WORKERS)
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(
        self, function: Callable[[Item], Result], items: Iterable[Item], *, min_items: int = MIN_ITEMS_FOR_A_POOL
    ) -> Iterator[Result]:
        """``function(item)`` for each item in the workers, yielded in order (see :func:`map_in_processes`)."""
        items = list(items)
        count = min(self.size, len(items))
        if count <= 1 or len(items) < min_items:
            yield from map(function, items)
            return
        while len(self.processes) < count:
            self.processes.append(_start_worker())
        batch = _Batch(f"{function.__module__}:{function.__qualname__}", items, self.processes[:count])
        finished = False
        try:
            for k in range(len(items)):
                yield batch.result(k)
            finished = True
        finally:
            batch.stop()
            if not finished or batch.failed:  # an item may still be running in a worker, or one died
                self.close()

    def close(self) -> None:
        """End the workers: end of input, each exits after its current item (reaped in the background)."""
        processes, self.processes = self.processes, []
        for process in processes:
            try:
                process.stdin.close()
            except OSError:
                pass
        if processes:  # the workers exit in ~0.1 s; the run need not wait for that
            threading.Thread(target=_reap, args=(processes,), name=REAPER_THREAD, daemon=True).start()


def _reap(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


class _Batch:
    """One map over the pool's workers: each takes the items in order, one at a time; results kept by index."""

    def __init__(self, target: str, items: list, processes: list[subprocess.Popen]) -> None:
        self.target = target
        self.items = items
        self.next_item = 0
        self.results: dict[int, tuple[bool, Any]] = {}
        self.stopped = False
        self.failed = False  # a worker died or an item raised
        self.condition = threading.Condition()
        self.threads = [threading.Thread(target=self._feed, args=(p,), daemon=True) for p in processes]
        for thread in self.threads:
            thread.start()

    def _take(self) -> int | None:
        with self.condition:
            if self.stopped or self.next_item >= len(self.items):
                return None
            self.next_item += 1
            return self.next_item - 1

    def _feed(self, process: subprocess.Popen) -> None:
        while (k := self._take()) is not None:
            try:
                _send(process.stdin, (self.target, self.items[k]))
                outcome = _receive(process.stdout)
            except (OSError, EOFError, ValueError, pickle.PickleError) as err:
                outcome = (False, RuntimeError(f"a worker process stopped unexpectedly ({err!r})"))
            with self.condition:
                self.results[k] = outcome
                if not outcome[0]:
                    self.stopped = self.failed = True
                self.condition.notify_all()
            if not outcome[0]:
                return

    def result(self, k: int) -> Any:
        with self.condition:
            while k not in self.results:
                self.condition.wait()
            ok, value = self.results.pop(k)
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        """Hand out no more items and wait for those running (their workers are then idle again)."""
        with self.condition:
            self.stopped = True
        for thread in self.threads:
            thread.join(timeout=60)
        if any(thread.is_alive() for thread in self.threads):
            self.failed = True


def _start_worker() -> subprocess.Popen:
    # the worker imports what this process imports (also where sys.path was extended at run time)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.Popen(
        [sys.executable, "-m", "sfm3r.pipelines.process_pool"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, env=env,
    )  # fmt: skip


def _send(stream: IO[bytes], value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the other end closed the pipe")
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the other end closed the pipe")
    return pickle.loads(data)


def _serve() -> None:
    """A worker's loop: (function name, item) from stdin, (True, result) or (False, exception) to stdout,
    until stdin ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything the function prints must not corrupt the result stream
    functions: dict[str, Callable] = {}
    while True:
        try:
            target, item = _receive(source)
        except EOFError:
            return
        try:
            if target not in functions:
                functions[target] = _resolve(target)
            outcome = (True, functions[target](item))
        except Exception as err:  # noqa: BLE001 - handed to the parent, which raises it
            outcome = (False, err)
        try:
            _send(sink, outcome)
        except (pickle.PickleError, TypeError, AttributeError) as err:  # an unpicklable result or exception
            _send(sink, (False, RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]} ({err})")))
        except BrokenPipeError:
            return


def _resolve(target: str) -> Callable:
    """``"package.module:function"`` -> the function (imported here, in the worker)."""
    module, _, name = target.partition(":")
    function = importlib.import_module(module)
    for part in name.split("."):
        function = getattr(function, part)
    return function


if __name__ == "__main__":
    _serve()
