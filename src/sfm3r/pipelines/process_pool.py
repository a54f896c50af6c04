"""Per-item CPU work on every core, in worker processes: for library calls that hold the GIL.

pycolmap's SIFT extraction holds the GIL (two threads calling it take as long as one), so the classic
backend extracts the images of a run in worker processes, one per core.

The workers are plain ``python -m sfm3r.pipelines.process_pool`` subprocesses, not ``multiprocessing``
ones: a spawned multiprocessing worker imports the caller's ``__main__`` again, which runs the whole
script a second time when a user calls the pipeline from a script without an ``if __name__ ==
"__main__":`` guard, and a forked one inherits torch's thread pool and the progress display's threads.
A worker imports only the module of the function it runs, gets one item at a time (pickled over its
stdin, the result back over its stdout), and ignores SIGINT, so that Ctrl-C reaches the parent alone,
which stops handing out work and keeps every result it received. Its stderr is the parent's (C library
logs are captured there as usual).
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

__all__ = ["map_in_processes", "usable_cores"]

Item = TypeVar("Item")
Result = TypeVar("Result")

MIN_ITEMS_FOR_A_POOL = 3  # below this, starting the workers (~0.3 s each) costs more than it saves
# At most this many workers by default: each holds an interpreter, pycolmap and one image's SIFT scratch
# (~150-300 MB at 1600 px), so a 64-core machine should not start 64 of them for a photo folder.
MAX_DEFAULT_WORKERS = 8
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
) -> Iterator[Result]:
    """``function(item)`` for each item, yielded in the order of `items` as they finish.

    Runs in this process when one worker is asked for or there are fewer than `min_items` items. An
    exception raised by `function` is raised here; the items not started yet are then not started.
    """
    items = list(items)
    count = min(workers or min(usable_cores(), MAX_DEFAULT_WORKERS), len(items))
    if count <= 1 or len(items) < min_items:
        yield from map(function, items)
        return
    pool = _Pool(f"{function.__module__}:{function.__qualname__}", items, count)
    try:
        for k in range(len(items)):
            yield pool.result(k)
    finally:
        pool.close()


class _Pool:
    """`count` worker processes taking the items in order, one at a time each; results kept by index."""

    def __init__(self, target: str, items: list, count: int) -> None:
        self.items = items
        self.next_item = 0
        self.results: dict[int, tuple[bool, Any]] = {}
        self.stopped = False
        self.condition = threading.Condition()
        self.processes = [_start_worker(target) for _ in range(count)]
        self.threads = [threading.Thread(target=self._feed, args=(p,), daemon=True) for p in self.processes]
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
                _send(process.stdin, self.items[k])
                outcome = _receive(process.stdout)
            except (OSError, EOFError, pickle.PickleError) as err:
                outcome = (False, RuntimeError(f"a worker process stopped unexpectedly ({err!r})"))
            with self.condition:
                self.results[k] = outcome
                if not outcome[0]:
                    self.stopped = True
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

    def close(self) -> None:
        with self.condition:
            self.stopped = True
        for process in self.processes:
            try:
                process.stdin.close()  # end of input: the worker exits after its current item
            except OSError:
                pass
        for thread in self.threads:
            thread.join(timeout=60)
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()


def _start_worker(target: str) -> subprocess.Popen:
    # the worker imports what this process imports (also where sys.path was extended at run time)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.Popen(
        [sys.executable, "-m", "sfm3r.pipelines.process_pool", target], stdin=subprocess.PIPE,
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


def _serve(target: str) -> None:
    """A worker's loop: items from stdin, (True, result) or (False, exception) to stdout, until stdin ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything the function prints must not corrupt the result stream
    module, _, name = target.partition(":")
    function = importlib.import_module(module)
    for part in name.split("."):
        function = getattr(function, part)
    while True:
        try:
            item = _receive(source)
        except EOFError:
            return
        try:
            outcome = (True, function(item))
        except Exception as err:  # noqa: BLE001 - handed to the parent, which raises it
            outcome = (False, err)
        try:
            _send(sink, outcome)
        except (pickle.PickleError, TypeError, AttributeError) as err:  # an unpicklable result or exception
            _send(sink, (False, RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]} ({err})")))
        except BrokenPipeError:
            return


if __name__ == "__main__":
    _serve(sys.argv[1])
