"""The per-image and per-pair stages on a Ray cluster (``--workers ray``): same cache, same results.

What runs where:
- classic backend: SIFT extraction (chunks of images) and matching + verification (chunks of pairs) as
  Ray tasks of one CPU each;
- MASt3R backend: one actor per GPU (``num_gpus=1``; on a CPU-only cluster one per CPU) holds the network;
  chunks of pairs go to whichever actor is free. :func:`chunk_pairs` groups pairs by image, so a chunk
  encodes each of its images once, and an actor keeps recent encodings across chunks.

Results: each worker opens the run's cache namespace itself and commits its own shards (io/cache.py: one
writer per process, no locks, a reader sees the union); a task returns only counts. Measured against
returning the units for the driver to commit, see benchmarks/distributed.py: a MASt3R pair's dense units
(~0.8 MB at 224 px, ~3 MB at 512 px) would cross the object store and then be written by one process.
Hence the cache folder must be the same path on every node (shared storage; docs/distributed.md); a worker
that does not see the run's namespace stops with a CacheError instead of writing elsewhere.

The driver then reads every unit back from the cache, exactly as after a single-process run, so the same
cache content gives the same model bit for bit; the workers compute each unit with the same functions as
the single-process stage (classic.py, mast3r.py).

Faults: a worker killed mid-chunk (``kill -9``, node lost) fails that task only; Ray retries it
(``max_retries``; actors are restarted) and the retry skips the chunk's units already committed. Chunks
that finished are never resubmitted. A killed driver takes its local cluster with it; rerunning the same
command resumes from the cache like any run. Progress counts pairs as chunks complete, over all workers.

Ray is imported only here and only when a runner is created: the default install and path stay Ray-free.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sfm3r.errors import CacheError, InputError, Sfm3rError
from sfm3r.io import cache
from sfm3r.pipelines.config import RayConf
from sfm3r.types import ImageInfo

logger = logging.getLogger(__name__)

OnDone = Callable[[int], None]  # called with the number of units a finished chunk completed
PairItem = tuple[str, ImageInfo, ImageInfo]  # (pair key, image i, image j), canonical order

CHUNKS_PER_WORKER = 4  # auto chunk size: about this many chunks per worker (load balance, progress steps)
MAX_CHUNK_PAIRS = 64  # ... and no more pairs than this per chunk (a retry recomputes at most one chunk)
_COMMIT_SECONDS = 2.0  # a worker commits its shard at least this often inside a chunk, and at its end


@dataclass(frozen=True)
class StoreRef:
    """What a worker needs to open a cache namespace itself: root folder, kind and config."""

    root: Path
    kind: str
    config: dict

    @classmethod
    def of(cls, store: cache.Store) -> StoreRef:
        return cls(store.path.parent, store.kind, store.config)

    def open(self) -> cache.Store:
        """Open for writing; refuses a namespace the driver did not create (cache not on shared storage)."""
        path = self.root / f"{self.kind}-{cache.config_hash(self.config)}"
        if not (path / cache.MANIFEST).is_file():
            raise CacheError(
                f"Ray worker on {os.uname().nodename} does not see the cache folder {path}: put the output "
                "folder on storage shared by every node (same path), see docs/distributed.md"
            )
        return cache.open_store(self.root, self.kind, self.config)


# --------------------------------------------------------------------------------------------- chunks


def chunk_pairs(pairs: Sequence[tuple[str, str]], chunk_size: int) -> list[list[int]]:
    """Split pair indices into chunks of at most ``chunk_size`` whose pairs share images.

    The images are ranked by a reverse Cuthill-McKee order of the pair graph (neighbours get near ranks),
    cut into blocks of ~sqrt(2 * chunk_size) images; the pairs between two blocks form a cell, cells are
    taken in order and packed into chunks. A chunk then touches about 2 * sqrt(2 * chunk_size) images for
    chunk_size pairs of a complete graph, instead of up to 2 * chunk_size. Deterministic.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not pairs:
        return []
    names = sorted({name for pair in pairs for name in pair})
    index = {name: k for k, name in enumerate(names)}
    rows = np.array([index[a] for a, _ in pairs] + [index[b] for _, b in pairs])
    cols = np.array([index[b] for _, b in pairs] + [index[a] for a, _ in pairs])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(names), len(names))).tocsr()
    rank = np.empty(len(names), np.int64)
    rank[reverse_cuthill_mckee(graph, symmetric_mode=True)] = np.arange(len(names))
    block = max(1, round(math.sqrt(2 * chunk_size)))
    cells: dict[tuple[int, int], list[int]] = {}
    for k, (a, b) in enumerate(pairs):
        ra, rb = sorted((int(rank[index[a]]), int(rank[index[b]])))
        cells.setdefault((ra // block, rb // block), []).append(k)
    chunks: list[list[int]] = [[]]
    for cell in sorted(cells):
        members = cells[cell]
        if chunks[-1] and len(chunks[-1]) + len(members) > chunk_size:
            chunks.append([])
        for k in members:
            if len(chunks[-1]) == chunk_size:
                chunks.append([])
            chunks[-1].append(k)
    return chunks


def auto_chunk_size(num_units: int, num_workers: int, given: int = 0) -> int:
    """``given`` if set, else about CHUNKS_PER_WORKER chunks per worker, at most MAX_CHUNK_PAIRS units each."""
    if given > 0:
        return given
    return int(min(MAX_CHUNK_PAIRS, max(1, math.ceil(num_units / (CHUNKS_PER_WORKER * max(1, num_workers))))))


# --------------------------------------------------------------------------------------------- worker side
# Plain functions, run inside Ray workers (wrapped by ray.remote in RayRunner); each returns counts only.


def features_chunk(ref: StoreRef, infos: Sequence[ImageInfo], sift_conf) -> dict[str, int]:
    """Extract and commit the SIFT features of ``infos`` not yet in the cache (as classic.extract_features)."""
    from sfm3r.io.images import read_image
    from sfm3r.pipelines.classic import _feature_fields
    from sfm3r.sfm.classic.sift import extract_sift

    started = time.perf_counter()
    store = ref.open()
    computed = 0
    with store.writer(max_seconds=_COMMIT_SECONDS) as writer:
        for info in infos:
            if store.has(info.sha256):  # committed before this chunk's worker died: not recomputed
                continue
            features = extract_sift(read_image(info.path), sift_conf)
            cache.write_features(writer, info.sha256, cache.Features(**_feature_fields(features)))
            computed += 1
    store.close()
    return {"computed": computed, "skipped": len(infos) - computed, "pid": os.getpid(),
            "seconds": time.perf_counter() - started}  # fmt: skip


def classic_chunk(
    ref: StoreRef, features_ref: StoreRef, items: Sequence[PairItem], conf, device: str
) -> dict[str, int]:
    """Match, verify and commit the pairs of ``items`` not yet in the cache (as classic.match_classic)."""
    from sfm3r.pipelines.classic import _feature_fields
    from sfm3r.sfm.classic.sift import SiftFeatures
    from sfm3r.sfm.classic.two_view import camera_prior, match_pair

    started = time.perf_counter()
    store = ref.open()
    features_store = cache.open_store(features_ref.root, features_ref.kind, features_ref.config, readonly=True)
    todo = [item for item in items if not store.has(item[0])]
    feats: dict[str, SiftFeatures] = {}
    for _, info_i, info_j in todo:
        for info in (info_i, info_j):
            if info.name not in feats:
                feats[info.name] = SiftFeatures(**_feature_fields(cache.read_features(features_store, info.sha256)))
    features_store.close()
    with store.writer(max_seconds=_COMMIT_SECONDS) as writer:
        for key, info_i, info_j in todo:
            result = match_pair(
                info_i.name, info_j.name, feats[info_i.name], feats[info_j.name],
                camera_prior(info_i.width, info_i.height, info_i.prior_focal_px),
                camera_prior(info_j.width, info_j.height, info_j.prior_focal_px), conf, device=device,
            )  # fmt: skip
            cache.write_pair_result(writer, key, result)
    store.close()
    return {"computed": len(todo), "skipped": len(items) - len(todo), "pid": os.getpid(),
            "seconds": time.perf_counter() - started}  # fmt: skip


class Mast3rWorker:
    """A Ray actor's state: the network, loaded once, and a token store kept across its chunks."""

    def __init__(self, checkpoint: str, device: str, token_images: int = 256) -> None:
        from sfm3r.sfm.mast3r.checkpoint import load_mast3r
        from sfm3r.sfm.mast3r.inference import LRUTokenStore

        self.device = "cuda" if device.startswith("cuda") else device  # the actor's own GPU is cuda:0
        self.model = load_mast3r(Path(checkpoint), device=self.device)
        self.tokens = LRUTokenStore(token_images)

    def run(self, ref: StoreRef, dense_ref: StoreRef, items: Sequence[PairItem], options: dict) -> dict[str, int]:
        """Infer, match and commit the pairs of ``items`` not yet in the cache (as mast3r.match_mast3r)."""
        from sfm3r.pipelines.mast3r import compute_pairs

        started = time.perf_counter()
        store, dense_store = ref.open(), dense_ref.open()
        todo = [item for item in items if not (store.has(item[0]) and dense_store.has(item[0]))]
        encoded = 0
        if todo:
            with store.writer(max_seconds=_COMMIT_SECONDS) as pair_writer, dense_store.writer(
                max_seconds=_COMMIT_SECONDS
            ) as dense_writer:
                encoded = compute_pairs(
                    self.model, todo, pair_writer, dense_writer, device=self.device, token_store=self.tokens,
                    **options,
                )
        store.close()
        dense_store.close()
        return {"computed": len(todo), "skipped": len(items) - len(todo), "encoded": encoded, "pid": os.getpid(),
                "seconds": time.perf_counter() - started}  # fmt: skip

    def pid(self) -> int:
        return os.getpid()


# --------------------------------------------------------------------------------------------- driver side


class WorkerLost(Sfm3rError):
    """A chunk failed on every retry (its workers kept dying)."""


class RayRunner:
    """Connects to (or starts) a Ray cluster and runs chunks of a stage on it; a context manager.

    If Ray is already initialised in this process (a test, a notebook), that cluster is used and left
    running; otherwise the runner starts a local cluster or connects to ``conf.address`` and disconnects
    (shutting down a cluster it started) on exit.
    """

    def __init__(self, conf: RayConf = RayConf()) -> None:
        self.conf = conf
        self._started = False
        self.stats: dict[str, Any] = {}  # last stage: chunks, tasks' seconds, worker pids (benchmarks, tests)

    def __enter__(self) -> RayRunner:
        ray = _import_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}  # fmt: skip
            if self.conf.address is None:
                kwargs["num_cpus"] = self.conf.num_cpus
                kwargs["runtime_env"] = {"env_vars": _worker_env()}
            else:
                if self.conf.num_cpus is not None:
                    raise InputError("--ray-num-cpus applies to a local cluster only; drop it with --ray-address")
                kwargs["address"] = self.conf.address
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise InputError(
                    f"cannot connect to the Ray cluster at {self.conf.address!r} ({error}); start it with "
                    "`ray start --head` (see docs/distributed.md) or leave --ray-address out for a local one"
                ) from None
            self._started = True
        resources = ray.cluster_resources()
        logger.info("ray: cluster with %d CPUs, %d GPUs", resources.get("CPU", 0), resources.get("GPU", 0))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            _import_ray().shutdown()
            self._started = False

    # --- stages
    def classic_features(self, store: cache.Store, todo: Sequence[ImageInfo], sift_conf, on_done: OnDone) -> None:
        """Extract and commit the features of ``todo`` on the cluster (one CPU per task)."""
        ray = _import_ray()
        size = auto_chunk_size(len(todo), self._num_cpus(), self.conf.chunk_pairs)
        chunks = [list(todo[k : k + size]) for k in range(0, len(todo), size)]
        task = ray.remote(num_cpus=1, max_retries=self.conf.max_retries)(features_chunk)
        ref = ray.put(StoreRef.of(store))
        submitted = {task.remote(ref, chunk, sift_conf): len(chunk) for chunk in chunks}
        self._collect("features", submitted, on_done)

    def classic_pairs(
        self, store: cache.Store, items: Sequence[PairItem], features_config: dict, conf, device: str, on_done: OnDone
    ) -> None:
        """Match, verify and commit the pairs of ``items`` on the cluster (one CPU per task)."""
        ray = _import_ray()
        size = auto_chunk_size(len(items), self._num_cpus(), self.conf.chunk_pairs)
        chunks = chunk_pairs([(i.name, j.name) for _, i, j in items], size)
        task = ray.remote(num_cpus=1, max_retries=self.conf.max_retries)(classic_chunk)
        features_ref = StoreRef(store.path.parent, "features-sift", cache._jsonable(features_config))
        ref, features_ref = ray.put(StoreRef.of(store)), ray.put(features_ref)
        submitted = {
            task.remote(ref, features_ref, [items[k] for k in chunk], conf, device): len(chunk) for chunk in chunks
        }
        self._collect("matching", submitted, on_done)

    def mast3r_pairs(
        self,
        store: cache.Store,
        dense_store: cache.Store,
        items: Sequence[PairItem],
        checkpoint: Path,
        *,
        net_image_size: int,
        batch_size: int,
        amp: str,
        device: str,
        pair_conf,
        on_done: OnDone,
    ) -> None:
        """Infer, match and commit the pairs of ``items`` on one actor per GPU (CPU: one per CPU)."""
        ray = _import_ray()
        gpu = device.startswith("cuda")
        slots = int(ray.cluster_resources().get("GPU", 0)) if gpu else self._num_cpus()
        if slots < 1:
            raise InputError(f"device {device!r} was asked for but the Ray cluster has no GPU; use --device cpu")
        size = auto_chunk_size(len(items), slots, self.conf.chunk_pairs)
        chunks = chunk_pairs([(i.name, j.name) for _, i, j in items], size)
        resources = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": 1}
        actor_class = ray.remote(max_restarts=self.conf.max_retries, max_task_retries=self.conf.max_retries,
                                 **resources)(Mast3rWorker)  # fmt: skip
        actors = [actor_class.remote(str(Path(checkpoint).resolve()), device) for _ in range(min(slots, len(chunks)))]
        options = {"net_image_size": net_image_size, "batch_size": batch_size, "amp": amp, "pair_conf": pair_conf}
        refs = ray.put(StoreRef.of(store)), ray.put(StoreRef.of(dense_store))
        pending = list(chunks)
        free = list(actors)
        in_flight: dict[Any, tuple[Any, int]] = {}
        self._begin()
        try:
            while pending or in_flight:
                while free and pending:
                    actor, chunk = free.pop(), pending.pop(0)
                    future = actor.run.remote(*refs, [items[k] for k in chunk], options)
                    in_flight[future] = (actor, len(chunk))
                [ready], _ = ray.wait(list(in_flight), num_returns=1)
                actor, count = in_flight.pop(ready)
                self._finish_one("matching", ready, count, on_done)
                free.append(actor)
        finally:
            for actor in actors:
                ray.kill(actor)
        self._log("matching")

    # --- helpers
    def _num_cpus(self) -> int:
        return max(1, int(_import_ray().cluster_resources().get("CPU", 1)))

    def _begin(self) -> None:
        self.stats = {"chunks": 0, "computed": 0, "skipped": 0, "encoded": 0, "task_seconds": 0.0, "pids": set(),
                      "started": time.perf_counter()}  # fmt: skip

    def _collect(self, stage: str, submitted: dict, on_done: OnDone) -> None:
        ray = _import_ray()
        self._begin()
        pending = list(submitted)
        try:
            while pending:
                [ready], pending = ray.wait(pending, num_returns=1)
                self._finish_one(stage, ready, submitted[ready], on_done)
        except BaseException:
            for future in pending:
                ray.cancel(future, force=True)
            raise
        self._log(stage)

    def _finish_one(self, stage: str, future, count: int, on_done: OnDone) -> None:
        ray = _import_ray()
        try:
            out = ray.get(future)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, Sfm3rError):
                raise type(cause)(str(cause)) from None
            raise
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayActorError) as error:
            reason = " ".join(str(error).split())[:300]  # an actor whose constructor failed says why here
            raise WorkerLost(
                f"{stage}: a chunk of {count} units failed {self.conf.max_retries + 1} times because its Ray "
                f"worker died ({type(error).__name__}: {reason}); finished units are in the cache: fix the "
                "cause and rerun the same command to resume"
            ) from None
        stats = self.stats
        stats["chunks"] += 1
        for name in ("computed", "skipped", "encoded"):
            stats[name] += out.get(name, 0)
        stats["task_seconds"] += out["seconds"]
        stats["pids"].add(out["pid"])
        on_done(count)

    def _log(self, stage: str) -> None:
        s = self.stats
        s["wall_seconds"] = time.perf_counter() - s.pop("started")
        logger.info(
            "ray %s: %d chunks on %d worker processes, %d units computed, %d found committed by an earlier try%s",
            stage, s["chunks"], len(s["pids"]), s["computed"], s["skipped"],
            f", encoder ran {s['encoded']} times" if s["encoded"] else "",
        )  # fmt: skip


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--workers ray needs Ray: pip install 'sfm3r[ray]' (or pip install ray)") from None
    return ray


def _worker_env() -> dict[str, str]:
    """Environment for a local cluster's workers: this sfm3r importable (also from a source checkout)."""
    import sfm3r

    source = str(Path(sfm3r.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join(p for p in (source, path) if p)}
