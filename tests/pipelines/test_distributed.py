"""`--workers ray`: the per-image and per-pair stages on a local Ray cluster of 2 CPU workers give the cache,
and so the model, of the single-process run bit for bit; a worker killed mid-chunk is recovered; a killed
driver resumes from the cache. Skipped when Ray is not installed (`pip install sfm3r[ray]`)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from sfm3r.pipelines.config import RayConf, preset_conf
from sfm3r.pipelines.distributed import chunk_pairs
from sfm3r.pipelines.reconstruct import Stage, reconstruct

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sfm"))
from reliability_helpers import SAMPLE_NAMES, assert_success, assert_user_error, invoke, photo_folder  # noqa: E402

SRC = Path(__file__).resolve().parents[2] / "src"
MODEL_FILES = ("cameras.bin", "images.bin", "points3D.bin")


def _fast_conf(**fields):
    conf = preset_conf("fast", **fields)
    return dataclasses.replace(conf, sift=dataclasses.replace(conf.sift, max_image_size=384))


@pytest.fixture(scope="module")
def ray_cluster():
    """A local cluster of 2 CPUs shared by the tests of this module (~3 s to start on an idle machine)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'sfm3r[ray]'")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three 384x256 sample photos (3 pairs)."""
    return photo_folder(tmp_path_factory.mktemp("distributed") / "photos", SAMPLE_NAMES[:3])


def _units(out: Path, kind: str) -> dict[str, list[dict[str, np.ndarray]]]:
    """key -> every committed copy of that unit in OUT/cache/<kind>-*: its datasets and attributes."""
    found: dict[str, list] = {}
    for shard in sorted((out / "cache").glob(f"{kind}-*/shards/*.h5")):
        with h5py.File(shard, "r") as f:
            for key, group in f["units"].items():
                copy = {name: ds[()] for name, ds in group.items()} | {"meta": group.attrs["meta"]}
                found.setdefault(key, []).append(copy)
    return found


def _assert_same_units(a: Path, b: Path, kind: str) -> None:
    units_a, units_b = _units(a, kind), _units(b, kind)
    assert units_a.keys() == units_b.keys() and units_a, kind
    for key, copies in units_a.items():
        for name, value in copies[0].items():
            other = units_b[key][0][name]
            assert np.array_equal(value, other) if isinstance(value, np.ndarray) else value == other, (kind, key, name)


def _assert_same_model(a: Path, b: Path) -> None:
    for name in MODEL_FILES:
        assert (a / "sparse" / "0" / name).read_bytes() == (b / "sparse" / "0" / name).read_bytes(), name


# --------------------------------------------------------------------------------------------- chunks


def test_chunks_cover_every_pair_once_and_share_images():
    names = [f"{k:02d}.jpg" for k in range(12)]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]  # 66 pairs
    chunks = chunk_pairs(pairs, 10)
    assert sorted(k for chunk in chunks for k in chunk) == list(range(len(pairs)))
    assert max(len(chunk) for chunk in chunks) <= 10
    touched = sum(len({n for k in chunk for n in pairs[k]}) for chunk in chunks)
    naive = sum(len({n for k in range(s, min(s + 10, 66)) for n in pairs[k]}) for s in range(0, 66, 10))
    assert touched < naive  # fewer encoder passes than chunks of consecutive pairs
    assert chunk_pairs(pairs, 10) == chunks  # deterministic
    assert chunk_pairs([], 4) == []


def test_a_worker_that_does_not_see_the_cache_folder_refuses_to_write_elsewhere(tmp_path):
    """A node without the shared cache folder must not create a private one that the driver never reads."""
    from sfm3r.errors import CacheError
    from sfm3r.io import cache
    from sfm3r.pipelines.distributed import StoreRef

    store = cache.open_store(tmp_path / "cache", "pairs-classic", {"a": 1})
    assert StoreRef.of(store).open().path == store.path  # the driver's namespace: found
    with pytest.raises(CacheError, match="shared"):
        StoreRef(tmp_path / "elsewhere", "pairs-classic", {"a": 1}).open()
    assert not (tmp_path / "elsewhere").exists()


# --------------------------------------------------------------------------------------------- same results


def test_classic_on_ray_gives_the_single_process_model(ray_cluster, photos, tmp_path):
    local = reconstruct(photos, tmp_path / "local", _fast_conf(), stop_after=Stage.ALIGN)
    seen: list[tuple[str, int, int]] = []
    distributed = reconstruct(
        photos, tmp_path / "ray", _fast_conf(workers="ray"), stop_after=Stage.ALIGN,
        progress=lambda stage, done, total: seen.append((stage, done, total)),
    )  # fmt: skip
    for kind in ("features-sift", "pairs-classic"):
        _assert_same_units(tmp_path / "local", tmp_path / "ray", kind)
    _assert_same_model(tmp_path / "local", tmp_path / "ray")
    assert distributed.counts["matching"] == local.counts["matching"]
    matching = [done for stage, done, total in seen if stage == "matching"]
    assert matching == sorted(matching) and matching[-1] == 3  # one bar over all workers, up to every pair


def test_ray_rerun_resumes_from_the_cache(ray_cluster, photos, tmp_path):
    conf = _fast_conf(workers="ray")
    reconstruct(photos, tmp_path / "out", conf, stop_after=Stage.MATCH)
    again = reconstruct(photos, tmp_path / "out", conf, stop_after=Stage.MATCH)
    assert (again.counts["matching"]["cached"], again.counts["matching"]["computed"]) == (3, 0)
    assert again.counts["features"]["computed"] == 0


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from mast3r_tiny_model import save_random_tiny_checkpoint

    return save_random_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth")


@pytest.mark.slow  # ~100 s on the shared 2-core box: both actors import torch and load the network
def test_tiny_mast3r_on_ray_gives_the_single_process_cache(ray_cluster, photos, tiny_checkpoint, tmp_path):
    """Two CPU actors, each holding the network; the pair and dense units equal the single-process ones."""
    conf = preset_conf("fast", checkpoint=tiny_checkpoint, net_image_size=224)
    local = reconstruct(photos, tmp_path / "local", conf, stop_after=Stage.MATCH)
    distributed = reconstruct(photos, tmp_path / "ray", dataclasses.replace(conf, workers="ray"),
                              stop_after=Stage.MATCH)  # fmt: skip
    for kind in ("pairs-mast3r", "dense-mast3r"):
        _assert_same_units(tmp_path / "local", tmp_path / "ray", kind)
    assert distributed.counts["matching"] == local.counts["matching"]


# --------------------------------------------------------------------------------------------- faults


def _pids_running(title: str) -> list[int]:
    """Processes whose title is `title` (Ray names a worker after the task it runs: "ray::classic_chunk")."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace") == title:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.mark.slow
def test_a_worker_killed_mid_chunk_is_retried_and_nothing_is_lost(ray_cluster, tmp_path):
    """kill -9 of a worker while it runs a chunk: Ray retries that chunk, the run finishes with the model of
    the single-process run, and every pair is committed exactly once (nothing finished was recomputed)."""
    photos = photo_folder(tmp_path / "photos", SAMPLE_NAMES)  # 15 pairs
    conf = dataclasses.replace(_fast_conf(workers="ray"), ray=RayConf(chunk_pairs=2))
    reconstruct(photos, tmp_path / "ray", conf, stop_after=Stage.PAIRS)  # features first: kill during matching
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = reconstruct(photos, tmp_path / "ray", conf, stop_after=Stage.ALIGN)
        except BaseException as error:  # reported by the main thread
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        running = _pids_running("ray::classic_chunk")
        if running:
            time.sleep(0.1)  # inside the chunk's work, not its start
            if running[0] in _pids_running("ray::classic_chunk"):
                os.kill(running[0], signal.SIGKILL)
                killed = running[0]
        time.sleep(0.02)
    thread.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    assert killed is not None, "no chunk was seen running"
    units = _units(tmp_path / "ray", "pairs-classic")
    assert len(units) == 15 and all(len(copies) == 1 for copies in units.values())
    reconstruct(photos, tmp_path / "local", _fast_conf(), stop_after=Stage.ALIGN)
    _assert_same_model(tmp_path / "local", tmp_path / "ray")


@pytest.mark.slow
def test_a_killed_driver_resumes_from_the_cache(tmp_path):
    """kill -9 of `sfm3r reconstruct --workers ray` during the matching; the same command then resumes
    (pairs committed by the workers are read back) and gives the model of an uninterrupted local run."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'sfm3r[ray]'")
    photos = photo_folder(tmp_path / "photos", SAMPLE_NAMES)  # 15 pairs
    fast = ("--preset", "fast", "--max-image-size", "384", "--quiet")
    out = tmp_path / "ray"
    command = [sys.executable, "-c", "from sfm3r.cli.main import main; main()", "reconstruct", str(photos), str(out),
               *fast, "--workers", "ray", "--ray-num-cpus", "2"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not 0 < len(_units(out, "pairs-classic")) < 15:
            assert driver.poll() is None, "the run ended before the kill point"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        try:  # the cluster's processes live in the driver's session: end what is left of them
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 60
    while _pids_running("ray::classic_chunk") and time.monotonic() < deadline:  # workers end with their raylet
        time.sleep(0.1)
    committed = len(_units(out, "pairs-classic"))
    assert_success(invoke("reconstruct", photos, out, *fast, "--workers", "ray", "--ray-num-cpus", "2"))
    log = (out / "log.txt").read_text()
    assert f"matching: 15 pairs, {committed} cached, {15 - committed} to compute" in log
    assert_success(invoke("reconstruct", photos, tmp_path / "local", *fast))
    _assert_same_model(tmp_path / "local", out)


# --------------------------------------------------------------------------------------------- CLI


def test_ray_options_need_workers_ray(photos, tmp_path):
    result = invoke("match", photos, tmp_path / "out", "--ray-address", "auto", "-q")
    assert result.exit_code == 2 and "--workers ray" in result.output


def test_workers_ray_without_ray_installed_says_what_to_install(photos, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert_user_error(invoke("match", photos, tmp_path / "out", "--workers", "ray", "-q"), "pip install", "ray")
