"""The result cache: per-image and per-pair results in HDF5 shards, kill-safe, shared by many workers.

This docstring is the schema. Every read and write of the cache goes through this module.

Folders (schema version 2, :data:`SCHEMA_VERSION`)::

    <root>/                                   e.g. OUT/cache
      <kind>-<confighash>/                    one namespace = one stage output for one configuration
        manifest.json                         {"schema_version": 2, "kind", "config_hash", "config", "created"}
        shards/
          <host>-<pid>-<token>-<seq>-<crc>.h5 committed shard: immutable, complete, read by everyone;
                                              <crc> = CRC-32 of the whole file (8 hex digits)
          .<host>.<pid>.<token>.<seq>.h5.tmp  shard being written: ignored by readers
        corrupt/                              unreadable shards moved aside (their units are recomputed)

- ``kind`` names the stage output: ``features-sift``, ``pairs-classic``, ``pairs-mast3r``, …
  (lower-case letters, digits and ``-``).
- ``confighash`` = :func:`config_hash` of every setting that affects the results: model / checkpoint
  sha256, network resolution, backend options. Another config gives another folder, so a changed option
  never reuses stale results, and two configs can coexist (switching back is free).
- A *unit* is one complete result (one image, one pair) under a *key* made from content hashes:
  an image key is its file's sha256 (``ImageInfo.sha256``), a pair key is :func:`pair_key` of the two
  sha256 in cache order (sorted). A unit that depends on more inputs (e.g. an image's canonical depth map
  depends on its pair set) takes ``config_hash`` of all of them as key. Keys are strings of
  ``[A-Za-z0-9_-]``, at most 200 characters. A changed image gives a changed key, so nothing stale is
  ever read; unused units simply stay on disk.

Shard file (HDF5, uncompressed: measured on these units, gzip saves 11 % on MASt3R pairs, 0 % on classic
pairs and 7 % on float16 tokens but writes 7-40x slower; lzf saves <= 2 %; see benchmarks/cache_throughput.py)::

    /                     attrs: schema_version (int), kind (str), config_hash (str), num_units (int)
    /units/<key>/         one group per unit, with one attribute ``meta``: a JSON object string
                          {"unit_type": str, "attrs": JSON text of the unit's attributes, "crc": int} (one attribute,
                          not one per value: h5py reads each attribute in ~0.1 ms, a fifth of a pair's
                          read time); "crc" = :func:`unit_checksum` (CRC-32 of the unit type, the attrs'
                          JSON and every array's name, dtype, shape and bytes), verified on every read
        <dataset>         one dataset per array, written whole

Unit types written by the typed helpers (other code may store free-form units with :meth:`Writer.add`;
"attrs" below are the entries of ``meta["attrs"]``):

``unit_type = "pair"`` (:func:`write_pair_result` / :func:`read_pair_result`), M matches, M may be 0:
    matches           (M,) compound, one row per match (44 bytes; one table instead of seven datasets
                      halves the h5py per-object cost, which dominates at these sizes), fields:
        xy_i, xy_j    (2,) float32  original pixels of image i / j, COLMAP convention (centre of pixel 0 at 0.5)
        idx_i, idx_j  int32         keypoint ids (classic: keypoint index; MASt3R: net pixel y*W+x); int64 in memory
        conf          float32       match confidence, higher is better
        pts_i, pts_j  (3,) float32  the match's 3D point in camera i's / camera j's frame (backend units)
    rel_pose          (3, 4) float64  optional [R | t], cam_j_from_cam_i (x_j = R x_i + t, t at the scale of
                                      pts_i); absent = no estimate
    attrs: name_i, name_j (str, names when computed), backend (str), verified (bool), num_inliers (int)

``unit_type = "features"`` (:func:`write_features` / :func:`read_features`), N keypoints, N may be 0:
    keypoints         (N, 2)   float32         original pixels, COLMAP convention
    descriptors       (N, D)   uint8|float32   dtype kept as given (SIFT: D = 128)
    scales            (N,)     float32         optional, original pixels
    orientations      (N,)     float32         optional, radians
    attrs: width, height (int, original image size after EXIF rotation)

``unit_type = "scene"`` (:func:`write_scene` / :func:`read_scene`), one alignment result (namespace
``scene-alignment``, config: the alignment's options and the sfm3r and pycolmap versions, so that an upgrade
aligns again; key: a hash of every input of the alignment):
    the Scene's arrays under their own names, ``cameras`` (C, 6) float64 (width, height, fx, fy, cx, cy),
    ``camera_distortion`` (C, 4) float64 (the model's distortion parameters, zero-padded)
    attrs: image_names, unregistered, camera_models (lists of str), info (the Scene's JSON-ready info)

No ``-1`` placeholders are stored: unmatched keypoints simply do not appear in a pair, and optional
arrays are absent rather than filled.

Kill safety: a writer builds each batch as an HDF5 file *in memory* (h5py on a ``BytesIO``), then writes its
bytes to a temp shard (``.…h5.tmp``, never opened by readers) in one OS write, fsyncs it and commits it by
``os.replace`` to the final name and an fsync of the folder. A unit is therefore visible only inside a
complete, closed file. A full disk surfaces as an ``OSError`` of that plain write (the temp file is
deleted, the batch's units are recomputed next time): HDF5 itself never writes to disk, so its
close-after-ENOSPC path (which could segfault) is never taken. ``kill -9`` loses at most the uncommitted batch
(a temp file, deleted on the next open when its writer is dead); those units are recomputed on resume.
An unflushed HDF5 file killed mid-write is unopenable (reference/PYTHON_STACK.md §D), hence no appends.

Batching: a writer commits a shard every ``max_units`` units, ``max_bytes`` bytes (default 128 MiB: the
batch is held in memory until its commit) or ``max_seconds`` seconds
(checked on :meth:`Writer.add`) and on exit, so 10k pairs make tens of files, not 10k, while a crash loses at
most one batch. Resume is per unit: a unit is done iff some committed shard holds it. Measured: one unit per
file costs 3-4x the CPU per write and 2.5 ms per file to index on open, batches cost neither.

Sharding: each writer (process, GPU, machine on a shared folder) writes its own uniquely named shards;
no locks, no shared file is ever modified. A reader indexes all shards and sees their union. If two
workers computed the same unit, both copies are complete and equivalent; the first shard in name order
wins (workers split keys among themselves, e.g. by a hash of the key). Other workers' new shards become
visible after :meth:`Store.refresh`.

Corruption: every shard's bytes are checked against the CRC-32 in its name when it is indexed (one
sequential read; catches flipped bytes, zeroed blocks and truncation anywhere in the file), and every
unit against its own checksum when it is read. A shard that fails either check, does not open, does not
match this namespace (foreign file) or raises *any* exception while read is logged as a warning and moved
to ``corrupt/``; its units count as missing and are recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sfm3r.errors import CacheError
from sfm3r.types import CAMERA_MODELS, Camera, PairResult, Scene

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: per-unit and per-shard CRC-32
MANIFEST = "manifest.json"
SHARDS = "shards"
CORRUPT = "corrupt"
STALE_TMP_SECONDS = 6 * 3600  # a temp shard untouched this long belongs to a dead writer (any host)

_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_SHA_RE = re.compile(r"^[0-9a-f]{16,128}$")
_SHARD_RE = re.compile(r"^[A-Za-z0-9-]+-\d{6}-(?P<crc>[0-9a-f]{8})\.h5$")
_TMP_RE = re.compile(r"^\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]+\.\d+\.h5\.tmp$")


# --------------------------------------------------------------------------------------------- keys


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """Short hex sha256 of a stable JSON form of ``config`` (sorted keys, no whitespace).

    Values may be JSON scalars, lists/tuples, mappings, Paths, Enums, numpy scalars and dataclasses.
    Two mappings with the same content give the same hash in any key order, across runs and machines
    (but ``1`` and ``1.0`` differ: pass values with the types the config dataclass holds).
    """
    text = json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def pair_key(sha_i: str, sha_j: str) -> str:
    """Key of the ordered pair (i, j): ``"<sha_i>_<sha_j>"``; ``pair_key(a, b) != pair_key(b, a)``.

    Cache order, for callers: an unordered pair is computed and stored once, with the image whose
    sha256 sorts first as i (``pair_key(*sorted((a, b)))``); a reader wanting the other order swaps the
    result (i <-> j fields, inverse relative pose). Sorting by content, not by input order, keeps the key
    stable when images are added, removed or renamed.
    """
    for sha in (sha_i, sha_j):
        if not _SHA_RE.match(sha):
            raise ValueError(f"pair_key expects lower-case hex content hashes, got {sha!r}")
    return f"{sha_i}_{sha_j}"


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"value {value!r} of type {type(value).__name__} has no stable JSON form")


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"cache key must match [A-Za-z0-9_-]{{1,200}}, got {key!r}")


# --------------------------------------------------------------------------------------------- units


@dataclass(frozen=True, eq=False)
class Unit:
    """One cached result: named arrays plus JSON-serialisable attributes (str, int, float, bool, None, lists)."""

    unit_type: str
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def _py(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def unit_checksum(unit_type: str, attrs_json: str, arrays: Mapping[str, np.ndarray]) -> int:
    """CRC-32 of a unit's payload: type, attributes (their JSON text) and each array (name, dtype, shape, bytes)."""
    crc = zlib.crc32(f"{unit_type}\0{attrs_json}".encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        crc = zlib.crc32(f"\0{name}\0{array.dtype.str}\0{array.shape}".encode(), crc)
        crc = zlib.crc32(array.view(np.uint8).reshape(-1) if array.size else b"", crc)
    return crc


def _meta(unit: Unit) -> str:
    attrs = json.dumps(_jsonable(unit.attrs))
    crc = unit_checksum(unit.unit_type, attrs, {k: np.asarray(v) for k, v in unit.arrays.items()})
    return json.dumps({"unit_type": unit.unit_type, "attrs": attrs, "crc": crc})


def _read_group(group: h5py.Group) -> Unit:
    """One unit, checked against its checksum. Raises ValueError when the payload does not match."""
    meta = json.loads(group.attrs["meta"])
    arrays = {name: ds[()] for name, ds in group.items()}
    if unit_checksum(meta["unit_type"], meta["attrs"], arrays) != meta["crc"]:
        raise ValueError(f"unit {group.name} does not match its checksum (the file changed after it was written)")
    return Unit(meta["unit_type"], arrays, json.loads(meta["attrs"]))


def _file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            crc = zlib.crc32(block, crc)
    return crc


# --------------------------------------------------------------------------------------------- store


class UnitLost(CacheError, KeyError):
    """A unit the store had indexed could not be read back (its shard is quarantined): rerun to recompute."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Store:
    """One namespace ``<root>/<kind>-<confighash>``: the union of its committed shards.

    Not thread-safe; use one Store per process (or thread). Also a context manager (closes open files).
    """

    def __init__(self, path: Path, kind: str, config: Mapping[str, Any], *, readonly: bool) -> None:
        self.path = path
        self.kind = kind
        self.config = _jsonable(config)
        self.config_hash = config_hash(config)
        self.readonly = readonly
        self._index: dict[str, list[Path]] = {}  # key -> committed shards holding it, in name order
        self._seen: set[Path] = set()  # shards already indexed (valid or moved aside)
        self._open: dict[Path, h5py.File] = {}

    # --- queries
    def has(self, key: str) -> bool:
        """Whether a committed shard holds ``key`` (as of the last :meth:`refresh` or own commit)."""
        return key in self._index

    def keys(self) -> set[str]:
        """Every key held by committed shards."""
        return set(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def read(self, key: str) -> Unit:
        """The unit stored under ``key``. Raises KeyError if absent (compute it, then write it), and
        :class:`UnitLost` (a KeyError and a CacheError) if it was indexed but its shard failed on read."""
        shards = list(self._index.get(key, ()))
        for shard in shards:
            try:
                return _read_group(self._file(shard)["units"][key])
            except Exception as exc:  # noqa: BLE001 -- h5py raises RuntimeError, OSError, KeyError, TypeError...
                self._quarantine(shard, f"reading unit {key} failed: {type(exc).__name__}: {exc}")
        if shards:
            raise UnitLost(
                f"cache unit {key} in {self.path} became unreadable while this run used it (its shard was moved "
                f"to {CORRUPT}/); rerun the same command to recompute it"
            )
        raise KeyError(f"{key} is not in cache {self.path}")

    def shard_files(self) -> list[Path]:
        """Committed shard files currently indexed."""
        return sorted({s for shards in self._index.values() for s in shards})

    # --- maintenance
    def refresh(self) -> None:
        """Index shards committed since the last scan (by other workers); clean dead writers' temp files."""
        folder = self.path / SHARDS
        if not folder.is_dir():
            return
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path = Path(entry.path)
            if entry.name.endswith(".tmp"):
                if not self.readonly:
                    _remove_if_stale(path)
            elif entry.name.endswith(".h5") and path not in self._seen:
                self._seen.add(path)
                self._index_shard(path)

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def writer(
        self, *, max_units: int = 256, max_bytes: int = 128 << 20, max_seconds: float = 60.0, durable: bool = True
    ) -> Writer:
        """A writer of new shards; use as ``with store.writer() as w: w.add(key, unit)``."""
        if self.readonly:
            raise CacheError(f"cache {self.path} was opened read-only; open it with readonly=False to write")
        return Writer(self, max_units=max_units, max_bytes=max_bytes, max_seconds=max_seconds, durable=durable)

    # --- internals
    def _file(self, shard: Path) -> h5py.File:
        f = self._open.get(shard)
        if f is None:
            if len(self._open) >= 64:  # bound open handles: drop the oldest
                oldest = next(iter(self._open))
                self._open.pop(oldest).close()
            f = self._open[shard] = h5py.File(shard, "r", locking=False)
        return f

    def _index_shard(self, shard: Path) -> None:
        try:
            name = _SHARD_RE.match(shard.name)
            if name is None:
                raise ValueError("its name carries no checksum (not written by this sfm3r version)")
            crc = _file_crc(shard)
            if crc != int(name["crc"], 16):
                raise ValueError(f"its bytes do not match its checksum ({crc:08x}, name says {name['crc']})")
            with h5py.File(shard, "r", locking=False) as f:
                got = (int(f.attrs.get("schema_version", -1)), _py(f.attrs.get("config_hash", "")))
                if got != (SCHEMA_VERSION, self.config_hash):
                    raise ValueError(f"shard has (schema, config) {got}, this store {SCHEMA_VERSION, self.config_hash}")
                keys = list(f["units"].keys())
        except FileNotFoundError:
            return  # moved aside by another worker meanwhile
        except Exception as exc:  # noqa: BLE001 -- any failure to read a shard means: recompute its units
            self._quarantine(shard, f"{type(exc).__name__}: {exc}")
            return
        for key in keys:
            self._index.setdefault(key, []).append(shard)

    def _add_committed(self, shard: Path, keys: list[str]) -> None:
        self._seen.add(shard)
        for key in keys:
            self._index.setdefault(key, []).append(shard)

    def _quarantine(self, shard: Path, reason: str) -> None:
        f = self._open.pop(shard, None)
        if f is not None:
            f.close()
        for key in [k for k, shards in self._index.items() if shard in shards]:
            self._index[key].remove(shard)
            if not self._index[key]:
                del self._index[key]
        where = "left in place (read-only store)"
        if not self.readonly:
            target = self.path / CORRUPT / shard.name
            try:
                target.parent.mkdir(exist_ok=True)
                os.replace(shard, target)
                where = f"moved to {target}"
            except FileNotFoundError:
                where = "already moved by another worker"
            except OSError as exc:
                where = f"could not be moved ({exc}); ignored"
        logger.warning("cache shard %s is unreadable (%s); %s; its units will be recomputed", shard, reason, where)


def open_store(
    root: Path | str, kind: str, config: Mapping[str, Any], *, readonly: bool = False, overwrite: bool = False
) -> Store:
    """Open (creating unless ``readonly``) the namespace ``<root>/<kind>-<config_hash(config)>``.

    ``config``: every setting that affects the results (checkpoint sha256, resolution, options).
    ``overwrite``: delete that namespace first (never while other workers write to it).
    Raises CacheError if the folder is not usable (a file in the way, not writable, written by another
    schema version or with another config under the same hash).
    """
    root = Path(root)
    if not _KIND_RE.match(kind):
        raise ValueError(f"cache kind must match [a-z0-9][a-z0-9-]*, got {kind!r}")
    store = Store(root / f"{kind}-{config_hash(config)}", kind, config, readonly=readonly)
    path = store.path
    for p in (root, path, path / SHARDS):
        if p.exists() and not p.is_dir():
            raise CacheError(f"cache path {p} is a file, not a folder: move it away or choose another output folder")
    if overwrite and not readonly and path.exists():
        logger.info("deleting cache namespace %s (overwrite)", path)
        shutil.rmtree(path)
    manifest = path / MANIFEST
    if manifest.exists():
        _check_manifest(manifest, store)
    if not readonly:
        try:
            (path / SHARDS).mkdir(parents=True, exist_ok=True)
            if not manifest.exists():
                _write_manifest(manifest, store)
        except PermissionError as exc:
            raise CacheError(f"cannot write the cache folder {path} ({exc}): choose a writable output folder") from exc
    if not readonly and not os.access(path / SHARDS, os.W_OK | os.X_OK):
        raise CacheError(f"the cache folder {path / SHARDS} is not writable: fix its permissions or choose another output folder")
    store.refresh()
    return store


def _write_manifest(manifest: Path, store: Store) -> None:
    content = {
        "schema_version": SCHEMA_VERSION,
        "kind": store.kind,
        "config_hash": store.config_hash,
        "config": store.config,
        "created": {
            "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version,
        },
    }
    tmp = manifest.with_name(f".{MANIFEST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, manifest)  # concurrent creators write equivalent manifests; the last one stays
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_manifest(manifest: Path, store: Store) -> None:
    fix = f"delete the folder {manifest.parent} (or rerun with --overwrite) to recompute"
    try:
        content = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"cache manifest {manifest} is unreadable ({exc}): {fix}") from exc
    version = content.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CacheError(
            f"cache {manifest.parent} was written with cache schema version {version}, this sfm3r uses "
            f"{SCHEMA_VERSION}: {fix}"
        )
    if content.get("kind") != store.kind or config_hash(content.get("config") or {}) != store.config_hash:
        raise CacheError(
            f"cache {manifest.parent} holds kind {content.get('kind')!r} with config {content.get('config')}, "
            f"not {store.kind!r} with {store.config}: {fix}"
        )


def _remove_if_stale(tmp: Path) -> None:
    """Delete a temp shard whose writer is dead (same host, pid gone) or that nobody touched for hours."""
    match = _TMP_RE.match(tmp.name)
    try:
        age = time.time() - tmp.stat().st_mtime
    except FileNotFoundError:
        return
    dead = False
    if match and match["host"] == _host():
        pid = int(match["pid"])
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                dead = True
            except PermissionError:
                pass  # alive, owned by someone else
    if dead or age > STALE_TMP_SECONDS:
        try:
            tmp.unlink()
            logger.info("removed temp shard %s of a crashed writer", tmp)
        except FileNotFoundError:
            pass


def _host() -> str:
    """This machine in temp shard names: hostname plus a hash of /etc/machine-id (containers share hostnames)."""
    try:
        machine = hashlib.sha256(Path("/etc/machine-id").read_bytes()).hexdigest()[:6]
    except OSError:
        machine = "0"
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] + "-" + machine


# --------------------------------------------------------------------------------------------- writer


class Writer:
    """Adds units to the store in batches; each batch becomes one committed shard (see module docstring).

    Units added but not yet committed are invisible to :meth:`Store.has` and lost if the process dies.
    Leaving the ``with`` block commits (also on an exception: the units added are complete).
    """

    def __init__(self, store: Store, *, max_units: int, max_bytes: int, max_seconds: float, durable: bool) -> None:
        if max_units < 1 or max_bytes < 1 or max_seconds <= 0:
            raise ValueError("max_units, max_bytes and max_seconds must be positive")
        self.store = store
        self.max_units, self.max_bytes, self.max_seconds, self.durable = max_units, max_bytes, max_seconds, durable
        self._name = f"{_host()}.{os.getpid()}.{secrets.token_hex(4)}"
        self._seq = 0
        self._file: h5py.File | None = None
        self._buffer: io.BytesIO | None = None  # the batch's HDF5 file, in memory
        self._tmp: Path | None = None
        self._pending: list[str] = []
        self._bytes = 0
        self._started = 0.0
        self.committed_units = 0
        self.committed_shards: list[Path] = []

    @property
    def pending(self) -> int:
        """Units added but not committed yet."""
        return len(self._pending)

    def add(self, key: str, unit: Unit) -> None:
        """Add one complete unit; commits the batch when it is full. A key already stored is skipped."""
        _check_key(key)
        if self.store.has(key) or key in self._pending:
            logger.debug("cache unit %s already present in %s; not written again", key, self.store.path)
            return
        meta = _meta(unit)
        if self._file is None:
            self._open_batch()
        group = self._file.create_group(f"units/{key}")
        try:
            group.attrs["meta"] = meta
            for name, array in unit.arrays.items():
                group.create_dataset(name, data=np.asarray(array))
        except BaseException:
            del self._file[f"units/{key}"]  # never commit a partial unit
            raise
        self._pending.append(key)
        self._bytes += unit.nbytes
        if (
            len(self._pending) >= self.max_units
            or self._bytes >= self.max_bytes
            or time.monotonic() - self._started >= self.max_seconds
        ):
            self.commit()

    def commit(self) -> Path | None:
        """Make every pending unit visible (one new shard); returns its path, or None if nothing was pending."""
        if not self._pending:
            self.abort()  # nothing complete to publish (e.g. the only add failed)
            return None
        f, tmp, keys = self._file, self._tmp, self._pending
        f.attrs["num_units"] = len(keys)
        f.close()
        image = self._buffer.getbuffer()  # the whole HDF5 file, built in memory (a view, no copy)
        self._file, self._tmp, self._pending, self._bytes, self._buffer = None, None, [], 0, None
        final = tmp.with_name(f"{self._name.replace('.', '-')}-{self._seq:06d}-{zlib.crc32(image):08x}.h5")
        self._seq += 1
        try:
            with open(tmp, "wb") as fh:
                fh.write(image)
                fh.flush()
                if self.durable:
                    os.fsync(fh.fileno())
            os.replace(tmp, final)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            logger.warning("temp cache shard %s was deleted by another process; its %d units will be recomputed",
                           tmp, len(keys))  # fmt: skip
            return None
        except BaseException as exc:  # disk full, I/O error, interrupt: never leave the temp file behind
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.filename is None:
                raise OSError(exc.errno, exc.strerror, str(tmp)) from exc
            raise
        finally:
            image.release()
        if self.durable:
            _fsync_dir(final.parent)
        self.store._add_committed(final, keys)
        self.committed_units += len(keys)
        self.committed_shards.append(final)
        logger.debug("committed %d cache units to %s", len(keys), final)
        return final

    def abort(self) -> None:
        """Drop the pending units (delete the temp shard)."""
        if self._file is not None:
            self._file.close()  # in memory: nothing on disk to delete
            self._tmp.unlink(missing_ok=True)
        self._file, self._tmp, self._pending, self._bytes, self._buffer = None, None, [], 0, None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            self.commit()
        except Exception:
            self.abort()
            if exc_type is None:
                raise

    def _open_batch(self) -> None:
        folder = self.store.path / SHARDS
        self._tmp = folder / f".{self._name}.{self._seq:06d}.h5.tmp"
        # in memory (h5py on a BytesIO): the file reaches the disk in one plain write at commit. Measured on
        # 1.5 MB token units: 3-4 ms per unit, against 3-6 ms plus a 60 MB copy at close for the core driver
        self._buffer = io.BytesIO()
        self._file = h5py.File(self._buffer, "w")
        self._file.attrs.update(
            {"schema_version": SCHEMA_VERSION, "kind": self.store.kind, "config_hash": self.store.config_hash}
        )
        self._file.create_group("units")
        self._started = time.monotonic()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------- typed units


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(what)


def _expect_type(unit: Unit, unit_type: str, key: str, store: Store) -> None:
    if unit.unit_type != unit_type:
        raise CacheError(
            f"cache unit {key} in {store.path} is a {unit.unit_type!r} unit, not {unit_type!r}: "
            "the namespace mixes stage outputs; delete the folder (or rerun with --overwrite)"
        )


MATCH_DTYPE = np.dtype(
    [("xy_i", "<f4", (2,)), ("xy_j", "<f4", (2,)), ("idx_i", "<i4"), ("idx_j", "<i4"), ("conf", "<f4"),
     ("pts_i", "<f4", (3,)), ("pts_j", "<f4", (3,))]
)  # fmt: skip
"""Row of the ``matches`` table of a pair unit (see the module docstring)."""


def pair_unit(result: PairResult) -> Unit:
    """A PairResult as a cache unit (schema ``unit_type = "pair"``); checks shapes."""
    m = result.num_matches
    matches = np.empty(m, MATCH_DTYPE)
    for name in MATCH_DTYPE.names:
        shape = (m, *MATCH_DTYPE[name].shape)
        got = np.shape(getattr(result, name))
        _require(got == shape, f"PairResult {result.name_i}/{result.name_j}: {name} has shape {got}, expected {shape}")
        value = getattr(result, name)
        matches[name] = _as_int32(value, name) if name.startswith("idx") else value
    arrays: dict[str, np.ndarray] = {"matches": matches}
    _require((result.rel_rotation is None) == (result.rel_translation is None),
             "rel_rotation and rel_translation must be both given or both None")  # fmt: skip
    if result.rel_rotation is not None:
        _require(np.shape(result.rel_rotation) == (3, 3) and np.shape(result.rel_translation) == (3,),
                 "rel_rotation must be (3, 3) and rel_translation (3,)")  # fmt: skip
        arrays["rel_pose"] = np.concatenate([result.rel_rotation, np.reshape(result.rel_translation, (3, 1))], 1)
    attrs = {"name_i": result.name_i, "name_j": result.name_j, "backend": result.backend,
             "verified": bool(result.verified), "num_inliers": int(result.num_inliers)}  # fmt: skip
    return Unit("pair", arrays, attrs)


def write_pair_result(writer: Writer, key: str, result: PairResult) -> None:
    """Add one pair result under ``key`` (normally :func:`pair_key` of the two images' sha256)."""
    writer.add(key, pair_unit(result))


def read_pair_result(store: Store, key: str, *, name_i: str | None = None, name_j: str | None = None) -> PairResult:
    """The PairResult stored under ``key``; ``name_i``/``name_j`` replace the stored names (the key is by
    content, so the same pair may have been computed under other file names)."""
    unit = store.read(key)
    _expect_type(unit, "pair", key, store)
    m, at = unit.arrays["matches"], unit.attrs
    pose = unit.arrays.get("rel_pose")
    return PairResult(
        name_i=name_i if name_i is not None else str(at["name_i"]),
        name_j=name_j if name_j is not None else str(at["name_j"]),
        backend=str(at["backend"]),
        xy_i=np.ascontiguousarray(m["xy_i"]), xy_j=np.ascontiguousarray(m["xy_j"]),
        idx_i=m["idx_i"].astype(np.int64), idx_j=m["idx_j"].astype(np.int64),
        conf=np.ascontiguousarray(m["conf"]),
        pts_i=np.ascontiguousarray(m["pts_i"]), pts_j=np.ascontiguousarray(m["pts_j"]),
        verified=bool(at["verified"]), num_inliers=int(at["num_inliers"]),
        rel_rotation=None if pose is None else np.ascontiguousarray(pose[:, :3]),
        rel_translation=None if pose is None else np.ascontiguousarray(pose[:, 3]),
    )  # fmt: skip


def _as_int32(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{name} holds ids outside [0, 2**31): cannot be cached as int32")
    return values.astype(np.int32)


@dataclass(frozen=True, eq=False)
class Features:
    """Local features of one image (schema ``unit_type = "features"``)."""

    keypoints: np.ndarray  # (N, 2) float32, original pixels, COLMAP convention
    descriptors: np.ndarray  # (N, D) uint8 or float32
    width: int  # original image size after EXIF rotation
    height: int
    scales: np.ndarray | None = None  # (N,) float32, original pixels
    orientations: np.ndarray | None = None  # (N,) float32, radians


def write_features(writer: Writer, key: str, features: Features) -> None:
    """Add the features of one image under ``key`` (the image's sha256)."""
    n = features.keypoints.shape[0]
    _require(features.keypoints.shape == (n, 2), f"keypoints must be (N, 2), got {features.keypoints.shape}")
    d = features.descriptors
    _require(d.ndim == 2 and d.shape[0] == n, f"descriptors must be (N={n}, D), got {d.shape}")
    _require(d.dtype in (np.uint8, np.float32), f"descriptors must be uint8 or float32, got {d.dtype}")
    arrays = {"keypoints": np.asarray(features.keypoints, np.float32), "descriptors": d}
    for name in ("scales", "orientations"):
        value = getattr(features, name)
        if value is not None:
            _require(np.shape(value) == (n,), f"{name} must be (N={n},), got {np.shape(value)}")
            arrays[name] = np.asarray(value, np.float32)
    writer.add(key, Unit("features", arrays, {"width": int(features.width), "height": int(features.height)}))


def read_features(store: Store, key: str) -> Features:
    """The Features stored under ``key``."""
    unit = store.read(key)
    _expect_type(unit, "features", key, store)
    a = unit.arrays
    return Features(
        keypoints=a["keypoints"], descriptors=a["descriptors"],
        width=int(unit.attrs["width"]), height=int(unit.attrs["height"]),
        scales=a.get("scales"), orientations=a.get("orientations"),
    )  # fmt: skip


_MAX_DISTORTION = 4  # OPENCV's k1, k2, p1, p2: the most distortion parameters of a supported model
_SCENE_ARRAYS = ("camera_of_image", "rotations", "translations", "points_xyz", "points_rgb", "points_error",
                 "obs_point", "obs_image", "obs_xy")  # fmt: skip


def _info_json(value: Any) -> Any:
    """A Scene's free-form ``info`` in JSON form (numpy values as Python numbers/lists)."""
    if isinstance(value, Mapping):
        return {str(k): _info_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_info_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def write_scene(writer: Writer, key: str, scene: Scene) -> None:
    """Add an alignment result under ``key`` (schema ``unit_type = "scene"``: the Scene's arrays as datasets
    of the same names, ``cameras`` (C, 6) float64 = width, height, fx, fy, cx, cy, optional ``dense_xyz`` /
    ``dense_rgb``; attrs ``image_names``, ``unregistered``, ``info``)."""
    arrays = {name: np.asarray(getattr(scene, name)) for name in _SCENE_ARRAYS}
    arrays["cameras"] = np.array([[c.width, c.height, c.fx, c.fy, c.cx, c.cy] for c in scene.cameras], np.float64)
    arrays["cameras"] = arrays["cameras"].reshape(-1, 6)
    arrays["camera_distortion"] = np.zeros((len(scene.cameras), _MAX_DISTORTION), np.float64)
    for index, camera in enumerate(scene.cameras):
        arrays["camera_distortion"][index, : len(camera.distortion)] = camera.distortion
    if scene.dense_xyz is not None:
        arrays["dense_xyz"], arrays["dense_rgb"] = scene.dense_xyz, scene.dense_rgb
    attrs = {"image_names": list(scene.image_names), "unregistered": list(scene.unregistered),
             "camera_models": [c.model for c in scene.cameras], "info": _info_json(scene.info)}  # fmt: skip
    writer.add(key, Unit("scene", arrays, attrs))


def read_scene(store: Store, key: str) -> Scene:
    """The Scene stored under ``key`` by :func:`write_scene`."""
    unit = store.read(key)
    _expect_type(unit, "scene", key, store)
    a, at = unit.arrays, unit.attrs
    cameras = tuple(
        Camera(width=int(w), height=int(h), fx=float(fx), fy=float(fy), cx=float(cx), cy=float(cy), model=model,
               distortion=tuple(distortion[: CAMERA_MODELS.get(model, 0)]))
        for (w, h, fx, fy, cx, cy), model, distortion in zip(a["cameras"], at["camera_models"], a["camera_distortion"])
    )  # fmt: skip
    return Scene(
        image_names=tuple(at["image_names"]), cameras=cameras, **{name: a[name] for name in _SCENE_ARRAYS},
        unregistered=tuple(at["unregistered"]), dense_xyz=a.get("dense_xyz"), dense_rgb=a.get("dense_rgb"),
        info=dict(at["info"]),
    )  # fmt: skip
