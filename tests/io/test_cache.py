"""The HDF5 result cache (sfm3r.io.cache): schema round trips, kill safety, sharding, corruption, errors."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import h5py
import numpy as np
import pytest

from sfm3r.errors import CacheError
from sfm3r.io import cache
from sfm3r.types import PairResult

sys.path.insert(0, str(Path(__file__).parent))
from cache_worker import CONFIG, KIND, make_pair, unit_keys  # noqa: E402

WORKER = Path(__file__).parent / "cache_worker.py"
SRC = Path(cache.__file__).resolve().parents[2]


def assert_pairs_equal(a: PairResult, b: PairResult) -> None:
    for name in ("name_i", "name_j", "backend", "verified", "num_inliers"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("xy_i", "xy_j", "idx_i", "idx_j", "conf", "pts_i", "pts_j", "rel_rotation", "rel_translation"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            assert x.dtype == y.dtype and x.shape == y.shape, name
            np.testing.assert_array_equal(x, y, err_msg=name)


def empty_pair(m: int = 0) -> PairResult:
    f = np.zeros
    return PairResult("a.jpg", "b.jpg", "classic-sift", f((m, 2), np.float32), f((m, 2), np.float32),
                      f(m, np.int64), f(m, np.int64), f(m, np.float32), f((m, 3), np.float32),
                      f((m, 3), np.float32), verified=False, num_inliers=0)  # fmt: skip


def sha(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture
def store(tmp_path: Path) -> cache.Store:
    with cache.open_store(tmp_path / "cache", KIND, CONFIG) as s:
        yield s


def start_worker(root: Path, first: int, count: int, max_units: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(WORKER), str(root), str(first), str(count), str(max_units)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


# ------------------------------------------------------------------------------------------ keys


def test_config_hash_is_stable_and_order_independent():
    class Mode(Enum):
        FAST = "fast"

    @dataclass(frozen=True)
    class Conf:
        size: int = 512

    a = {"model": "abc", "res": (512, 384), "mode": Mode.FAST, "path": Path("/x"), "conf": Conf(), "f": np.float32(0.5)}
    b = {"f": 0.5, "conf": {"size": 512}, "path": "/x", "mode": "fast", "res": [512, 384], "model": "abc"}
    assert cache.config_hash(a) == cache.config_hash(b)
    assert len(cache.config_hash(a)) == 12 and int(cache.config_hash(a), 16) >= 0
    assert cache.config_hash({**b, "res": [512, 336]}) != cache.config_hash(b)
    with pytest.raises(TypeError, match="no stable JSON form"):
        cache.config_hash({"x": object()})


def test_pair_key_is_ordered_and_validates_hashes():
    assert cache.pair_key(sha(1), sha(2)) != cache.pair_key(sha(2), sha(1))
    assert cache.pair_key(sha(1), sha(2)) == f"{sha(1)}_{sha(2)}"
    with pytest.raises(ValueError, match="hex content hashes"):
        cache.pair_key("IMG_0001.jpg", sha(2))


def test_pair_result_round_trip_with_relative_pose(store):
    key = unit_keys(1)[0]
    original = make_pair(key, num_matches=500)
    with store.writer() as w:
        cache.write_pair_result(w, key, original)
    assert store.has(key) and store.keys() == {key}
    assert_pairs_equal(cache.read_pair_result(store, key), original)
    renamed = cache.read_pair_result(store, key, name_i="new_i.jpg", name_j="new_j.jpg")
    assert (renamed.name_i, renamed.name_j) == ("new_i.jpg", "new_j.jpg")


def test_pair_result_round_trip_without_pose_and_without_matches(store):
    with store.writer() as w:
        cache.write_pair_result(w, cache.pair_key(sha(1), sha(2)), empty_pair(0))
        cache.write_pair_result(w, cache.pair_key(sha(2), sha(3)), empty_pair(7))
    for key, m in [(cache.pair_key(sha(1), sha(2)), 0), (cache.pair_key(sha(2), sha(3)), 7)]:
        got = cache.read_pair_result(store, key)
        assert_pairs_equal(got, empty_pair(m))
        assert got.num_matches == m and got.rel_rotation is None and got.verified is False


def test_pair_result_shape_mismatch_is_rejected_before_writing(store):
    bad = make_pair(unit_keys(1)[0], 10)
    bad = PairResult(**{**bad.__dict__, "pts_j": bad.pts_j[:5]})
    with store.writer() as w:
        with pytest.raises(ValueError, match="pts_j has shape"):
            cache.write_pair_result(w, unit_keys(1)[0], bad)
        assert w.pending == 0


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("with_geometry", [True, False])
def test_features_round_trip(store, dtype, with_geometry):
    rng = np.random.default_rng(0)
    n = 300
    feats = cache.Features(
        keypoints=rng.uniform(0, 640, (n, 2)).astype(np.float32),
        descriptors=rng.integers(0, 255, (n, 128)).astype(dtype),
        width=640, height=480,
        scales=rng.uniform(1, 5, n).astype(np.float32) if with_geometry else None,
        orientations=rng.uniform(-3, 3, n).astype(np.float32) if with_geometry else None,
    )  # fmt: skip
    with store.writer() as w:
        cache.write_features(w, sha(1), feats)
    got = cache.read_features(store, sha(1))
    assert (got.width, got.height) == (640, 480) and got.descriptors.dtype == dtype
    np.testing.assert_array_equal(got.keypoints, feats.keypoints)
    np.testing.assert_array_equal(got.descriptors, feats.descriptors)
    for name in ("scales", "orientations"):
        if with_geometry:
            np.testing.assert_array_equal(getattr(got, name), getattr(feats, name))
        else:
            assert getattr(got, name) is None


def test_features_with_zero_keypoints_round_trip(store):
    feats = cache.Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), width=10, height=20)
    with store.writer() as w:
        cache.write_features(w, sha(5), feats)
    got = cache.read_features(store, sha(5))
    assert got.keypoints.shape == (0, 2) and got.descriptors.shape == (0, 128)


def test_reading_a_unit_as_the_wrong_type_raises_cache_error(store):
    with store.writer() as w:
        w.add(sha(9), cache.Unit("tokens", {"tokens": np.zeros((4, 8), np.float16)}, {"net_height": 32}))
    with pytest.raises(CacheError, match="'tokens' unit, not 'pair'"):
        cache.read_pair_result(store, sha(9))


def test_free_form_unit_round_trip_and_missing_key(store):
    attrs = {"label": "x", "score": 0.25, "ok": True, "n": 3, "none": None, "shape": [2, 3]}
    unit = cache.Unit("stage-x", {"a": np.arange(5, dtype=np.int16)}, {**attrs, "n": np.int64(3)})
    with store.writer() as w:
        w.add("my_key-1", unit)
        with pytest.raises(TypeError, match="no stable JSON form"):
            w.add("my_key-2", cache.Unit("stage-x", {}, {"bad": object()}))
    got = store.read("my_key-1")
    assert got.unit_type == "stage-x" and got.attrs == attrs
    assert [type(v) for v in got.attrs.values()] == [type(v) for v in attrs.values()]
    assert not store.has("my_key-2")
    np.testing.assert_array_equal(got.arrays["a"], np.arange(5, dtype=np.int16))
    with pytest.raises(KeyError):
        store.read("absent")
    with store.writer() as w, pytest.raises(ValueError, match="cache key"):
        w.add("bad/key", unit)


def test_a_failed_add_leaves_no_partial_unit(store):
    with store.writer() as w:
        bad = cache.Unit("x", {"good": np.zeros(3), "bad": np.array([object()])})
        with pytest.raises(TypeError):
            w.add("k1", bad)
        w.add("k2", cache.Unit("x", {"good": np.zeros(3)}))
    assert store.keys() == {"k2"}
    reopened = cache.open_store(store.path.parent, KIND, CONFIG)
    assert reopened.keys() == {"k2"}
    with store.writer() as w, pytest.raises(TypeError):
        w.add("k3", bad)  # the only add of this batch fails: no empty shard, no temp file left
    assert len(list((store.path / cache.SHARDS).iterdir())) == 1


# ------------------------------------------------------------------------------------------ batching, resume


def test_writer_batches_units_into_shards_and_units_are_visible_only_when_committed(tmp_path):
    store = cache.open_store(tmp_path, KIND, CONFIG)
    other = cache.open_store(tmp_path, KIND, CONFIG)  # another worker on the same folder
    keys = unit_keys(7)
    with store.writer(max_units=3) as w:
        for i, key in enumerate(keys):
            cache.write_pair_result(w, key, make_pair(key, 20))
            other.refresh()
            assert other.keys() == set(keys[: (i + 1) // 3 * 3])  # only complete batches are visible
    assert len(store.shard_files()) == 3 and store.keys() == set(keys)
    other.refresh()
    assert other.keys() == set(keys)
    assert not list((store.path / cache.SHARDS).glob("*.tmp"))


def test_writer_commits_after_max_seconds(store):
    with store.writer(max_units=1000, max_seconds=1.0) as w:
        w.add("a", cache.Unit("x", {"v": np.zeros(2)}))
        assert w.pending == 1
        time.sleep(1.1)
        w.add("b", cache.Unit("x", {"v": np.zeros(2)}))  # the batch is old: commits a and b
        assert w.pending == 0 and store.keys() == {"a", "b"}


def test_exception_in_writer_block_keeps_completed_units(store):
    with pytest.raises(RuntimeError, match="backend failed"), store.writer() as w:
        w.add("done", cache.Unit("x", {"v": np.zeros(2)}))
        raise RuntimeError("backend failed")
    assert store.keys() == {"done"}


def test_duplicate_units_from_two_workers_are_harmless(tmp_path):
    key = unit_keys(1)[0]
    for _ in range(2):  # two workers that both computed the same pair, each in its own shard
        s = cache.open_store(tmp_path, KIND, CONFIG)
        s._index.clear()  # simulate a worker that started before the other one committed
        with s.writer() as w:
            cache.write_pair_result(w, key, make_pair(key, 50))
    reader = cache.open_store(tmp_path, KIND, CONFIG)
    assert len(list((reader.path / cache.SHARDS).glob("*.h5"))) == 2
    assert reader.keys() == {key}
    assert_pairs_equal(cache.read_pair_result(reader, key), make_pair(key, 50))


def _resume(store: cache.Store, keys: list[str]) -> int:
    """What a pipeline stage does: compute and store only the missing units; returns how many it computed."""
    computed = 0
    with store.writer(max_units=8) as w:
        for key in keys:
            if not store.has(key):
                cache.write_pair_result(w, key, make_pair(key))
                computed += 1
    return computed


def _kill_writer_midway(root: Path, rng: random.Random | None) -> set[str]:
    """Start a writer and kill -9 it after its 3rd commit; return the keys it reported committed.

    rng None: kill while a batch is half written (2 of 5 units pending); else at a random moment.
    """
    proc = start_worker(root, first=0, count=2000, max_units=5)
    committed: set[str] = set()
    commits = 0
    for line in proc.stdout:
        committed.update(line.split()[1:] if line.startswith("COMMITTED") else ())
        commits += line.startswith("COMMITTED")
        if commits >= 3 and (rng is not None or line == "PENDING 2\n"):
            break
    if rng is not None:
        time.sleep(rng.uniform(0.0, 0.15))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for line in proc.stdout:  # lines printed before the kill
        committed.update(line.split()[1:] if line.startswith("COMMITTED") else ())
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL and commits >= 3
    return committed


def _check_after_kill(root: Path, committed: set[str]) -> None:
    store = cache.open_store(root, KIND, CONFIG)
    assert not list((store.path / cache.SHARDS).glob("*.tmp")), "the dead writer's temp shard was not cleaned"
    assert not (store.path / cache.CORRUPT).exists(), "the kill left a broken committed shard"
    assert committed <= store.keys(), "a committed unit was lost"
    for key in store.keys():  # every visible unit is complete and correct
        assert_pairs_equal(cache.read_pair_result(store, key), make_pair(key))
    target = unit_keys(max(len(store.keys()) + 10, 30))
    done_before = len(store.keys() & set(target))
    assert done_before < len(target)
    assert _resume(store, target) == len(target) - done_before
    rerun = cache.open_store(root, KIND, CONFIG)
    assert _resume(rerun, target) == 0  # a second rerun computes nothing
    for key in target:
        assert_pairs_equal(cache.read_pair_result(rerun, key), make_pair(key))


def test_kill_9_keeps_committed_units_and_rerun_computes_only_missing(tmp_path):
    committed = _kill_writer_midway(tmp_path, rng=None)
    assert len(committed) >= 15 and len(committed) % 5 == 0  # whole batches only
    # the pending batch lives in memory: at most the one being written at the kill is on disk as .tmp
    assert len(list(tmp_path.glob(f"*/{cache.SHARDS}/.*.h5.tmp"))) <= 1
    _check_after_kill(tmp_path, committed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_kill_9_at_random_moments(tmp_path, seed):
    _check_after_kill(tmp_path, _kill_writer_midway(tmp_path, random.Random(seed)))


def test_stale_temp_shard_of_a_dead_writer_is_removed_and_live_ones_kept(tmp_path):
    store = cache.open_store(tmp_path, KIND, CONFIG)
    folder = store.path / cache.SHARDS
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = cache._host()
    dead_tmp = folder / f".{host}.{dead.pid}.00aa.000000.h5.tmp"
    live_tmp = folder / f".{host}.{os.getppid()}.00bb.000000.h5.tmp"
    other_host_tmp = folder / f".elsewhere.{dead.pid}.00cc.000000.h5.tmp"
    for p in (dead_tmp, live_tmp, other_host_tmp):
        p.write_bytes(b"partial")
    reopened = cache.open_store(tmp_path, KIND, CONFIG)
    assert not dead_tmp.exists() and live_tmp.exists() and other_host_tmp.exists()
    assert len(reopened) == 0
    old = time.time() - cache.STALE_TMP_SECONDS - 10
    os.utime(other_host_tmp, (old, old))
    cache.open_store(tmp_path, KIND, CONFIG)
    assert not other_host_tmp.exists()


def test_two_processes_writing_disjoint_units_are_seen_as_one_store(tmp_path):
    cache.open_store(tmp_path, KIND, CONFIG)
    workers = [start_worker(tmp_path, 0, 12, 4), start_worker(tmp_path, 11, 12, 5)]  # unit 11 by both
    outputs = [w.communicate(timeout=60)[0] for w in workers]
    assert all(w.returncode == 0 and out.rstrip().endswith("DONE") for w, out in zip(workers, outputs))
    store = cache.open_store(tmp_path, KIND, CONFIG)
    assert store.keys() == set(unit_keys(23))
    for key in store.keys():
        assert_pairs_equal(cache.read_pair_result(store, key), make_pair(key))


# ------------------------------------------------------------------------------------------ corruption, errors


def _write_some(root: Path, n: int, max_units: int) -> cache.Store:
    store = cache.open_store(root, KIND, CONFIG)
    with store.writer(max_units=max_units) as w:
        for key in unit_keys(n):
            cache.write_pair_result(w, key, make_pair(key, 200))
    return store


def test_truncated_shard_is_moved_aside_and_its_units_recomputed(tmp_path, caplog):
    first = _write_some(tmp_path, 6, max_units=3)
    shard = first.shard_files()[0]
    lost = {k for k in unit_keys(6) if first._index[k] == [shard]}
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="sfm3r.io.cache"):
        store = cache.open_store(tmp_path, KIND, CONFIG)
    assert "unreadable" in caplog.text and shard.name in caplog.text
    assert (store.path / cache.CORRUPT / shard.name).exists() and not shard.exists()
    assert store.keys() == set(unit_keys(6)) - lost
    assert _resume(store, unit_keys(6)) == len(lost) == 3


def test_shard_corrupted_after_indexing_is_reported_on_read(tmp_path, caplog):
    store = _write_some(tmp_path, 2, max_units=10)
    shard = store.shard_files()[0]
    shard.write_bytes(b"\0" * 100)
    key = unit_keys(1)[0]
    with caplog.at_level(logging.WARNING, logger="sfm3r.io.cache"), pytest.raises(KeyError):
        store.read(key)
    assert not store.has(key) and "unreadable" in caplog.text


def test_foreign_or_garbage_shard_files_are_ignored(tmp_path, caplog):
    store = _write_some(tmp_path, 2, max_units=10)
    (store.path / cache.SHARDS / "garbage.h5").write_bytes(b"not hdf5 at all")
    with h5py.File(store.path / cache.SHARDS / "foreign.h5", "w") as f:  # copied from another config
        f.attrs.update({"schema_version": cache.SCHEMA_VERSION, "config_hash": "ffffffffffff"})
        f.create_group("units/somekey")
    with caplog.at_level(logging.WARNING, logger="sfm3r.io.cache"):
        reopened = cache.open_store(tmp_path, KIND, CONFIG)
    assert reopened.keys() == set(unit_keys(2))
    assert sorted(p.name for p in (reopened.path / cache.CORRUPT).iterdir()) == ["foreign.h5", "garbage.h5"]


def test_other_schema_version_raises_and_overwrite_recovers(tmp_path):
    store = _write_some(tmp_path, 2, max_units=10)
    manifest = store.path / cache.MANIFEST
    content = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**content, "schema_version": 0}))
    with pytest.raises(CacheError, match=r"schema version 0.*delete the folder.*--overwrite"):
        cache.open_store(tmp_path, KIND, CONFIG)
    fresh = cache.open_store(tmp_path, KIND, CONFIG, overwrite=True)
    assert len(fresh) == 0 and json.loads(manifest.read_text())["schema_version"] == cache.SCHEMA_VERSION


def test_changed_config_uses_another_namespace_and_tampered_manifest_raises(tmp_path):
    store = _write_some(tmp_path, 2, max_units=10)
    other = cache.open_store(tmp_path, KIND, {**CONFIG, "resolution": 384})
    assert other.path != store.path and len(other) == 0
    same = cache.open_store(tmp_path, KIND, dict(reversed(list(CONFIG.items()))))
    assert same.path == store.path and same.keys() == store.keys()
    manifest = store.path / cache.MANIFEST
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "config": {"resolution": 1}}))
    with pytest.raises(CacheError, match="delete the folder"):
        cache.open_store(tmp_path, KIND, CONFIG)


def test_a_file_where_the_cache_folder_should_be_raises(tmp_path):
    (tmp_path / "cache").write_text("oops")
    with pytest.raises(CacheError, match="is a file, not a folder"):
        cache.open_store(tmp_path / "cache", KIND, CONFIG)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_not_writable_folder_raises(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(CacheError, match="writable"):
            cache.open_store(tmp_path / "cache", KIND, CONFIG)
    finally:
        tmp_path.chmod(0o700)


def test_read_only_store_reads_but_refuses_to_write(tmp_path):
    _write_some(tmp_path, 2, max_units=10)
    ro = cache.open_store(tmp_path, KIND, CONFIG, readonly=True)
    assert ro.keys() == set(unit_keys(2))
    with pytest.raises(CacheError, match="read-only"):
        ro.writer()
    missing = cache.open_store(tmp_path / "nothing", KIND, CONFIG, readonly=True)
    assert len(missing) == 0 and not (tmp_path / "nothing").exists()


def test_temp_shard_deleted_by_another_process_loses_only_that_batch(store, caplog, monkeypatch):
    real_replace = os.replace

    def replace_after_someone_deleted_it(src, dst):
        Path(src).unlink()  # e.g. a worker on a machine with the same hostname judged it stale
        return real_replace(src, dst)

    with store.writer() as w:
        w.add("first", cache.Unit("x", {"v": np.zeros(2)}))
        w.commit()
        w.add("second", cache.Unit("x", {"v": np.zeros(2)}))
        monkeypatch.setattr(cache.os, "replace", replace_after_someone_deleted_it)
        with caplog.at_level(logging.WARNING, logger="sfm3r.io.cache"):
            assert w.commit() is None
        monkeypatch.undo()
    assert "will be recomputed" in caplog.text
    assert store.keys() == {"first"} and cache.open_store(store.path.parent, KIND, CONFIG).keys() == {"first"}


def test_shard_layout_matches_the_documented_schema(store):
    """Plain h5py sees the layout documented in the module docstring (other tools can read the cache)."""
    key = unit_keys(1)[0]
    with store.writer() as w:
        cache.write_pair_result(w, key, make_pair(key, 4))
    manifest = json.loads((store.path / cache.MANIFEST).read_text())
    assert manifest["schema_version"] == cache.SCHEMA_VERSION and manifest["config"] == CONFIG
    assert store.path.name == f"{KIND}-{cache.config_hash(CONFIG)}" == f"{KIND}-{manifest['config_hash']}"
    (shard,) = store.shard_files()
    with h5py.File(shard, "r") as f:
        assert f.attrs["schema_version"] == cache.SCHEMA_VERSION and f.attrs["num_units"] == 1
        assert f.attrs["config_hash"] == cache.config_hash(CONFIG) and f.attrs["kind"] == KIND
        group = f["units"][key]
        assert sorted(group) == ["matches", "rel_pose"] and list(group.attrs) == ["meta"]
        meta = json.loads(group.attrs["meta"])
        assert meta["unit_type"] == "pair"
        assert set(json.loads(meta["attrs"])) == {"name_i", "name_j", "backend", "verified", "num_inliers"}
        assert meta["crc"] == cache.unit_checksum("pair", meta["attrs"], {k: v[()] for k, v in group.items()})
        matches = group["matches"]
        assert matches.shape == (4,) and matches.dtype.names == ("xy_i", "xy_j", "idx_i", "idx_j", "conf", "pts_i", "pts_j")
        assert matches.dtype["xy_i"] == np.dtype(("<f4", (2,))) and matches.dtype["idx_i"] == np.int32
        assert group["rel_pose"].shape == (3, 4) and group["rel_pose"].dtype == np.float64
