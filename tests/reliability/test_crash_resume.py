"""Crash and resume: `kill -9` the CLI during the pairwise stage or the alignment, rerun the same command.

What must hold after the rerun:
- the model is the one an uninterrupted run gives (poses and points to 1e-9: the pipeline is deterministic);
- every pair committed to OUT/cache before the kill is read back, not recomputed ("matching: N pairs,
  C cached, T to compute" in OUT/log.txt and the same counts in OUT/run.json);
- the killed writer's temp shard is cleaned up.

The classic backend commits a cache batch every 2 s (pipelines/classic.py _COMMIT_SECONDS), so a kill
loses at most ~2 s of pairwise work plus the pair in flight. The quick test commits every pair (its tiny
images match in about a second) and kills once 4 are committed; the slow tests use full-size photos, the
real interval and random kill times.
"""

from __future__ import annotations

import random
import shutil
import re
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from reliability_helpers import FAST, SAMPLE, SAMPLE_NAMES, assert_success, cli_command, cli_env, invoke, photo_folder, run_json

from sfm3r.io.colmap import read_colmap_model


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Six 384x256 photos (15 pairs): the quick test."""
    return photo_folder(tmp_path_factory.mktemp("crash") / "photos", SAMPLE_NAMES)


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory) -> Path:
    """An uninterrupted run of the quick test's command."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert_success(invoke("reconstruct", photos, out, *FAST))
    return out


# The slow tests: four full-size sample photos (768x512, 6 pairs), default preset, the real commit
# interval; the pairwise stage and the alignment each last several seconds.
FULL_NAMES = SAMPLE_NAMES[1:5]
FULL_ARGS = ("--quiet",)


@pytest.fixture(scope="module")
def full_photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("crash-full") / "photos"
    folder.mkdir()
    for name in FULL_NAMES:
        shutil.copy(SAMPLE / "images" / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def full_reference(full_photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference-full") / "out"
    assert_success(invoke("reconstruct", full_photos, out, *FULL_ARGS))
    return out


def _committed_pairs(out: Path) -> int:
    """Pair units in committed shards (what a rerun must find in the cache)."""
    total = 0
    for shard in (out / "cache").glob("pairs-classic-*/shards/*.h5"):
        with h5py.File(shard, "r") as f:
            total += len(f["units"])
    return total


def _log(out: Path) -> str:
    path = out / "log.txt"
    return path.read_text() if path.exists() else ""


# Commit every pair instead of every 2 s: tiny images match in ~1 s, and a kill may now land in a commit.
# Commit every unit at once, and keep each pair in the matching stage for 0.2 s: since the matching only
# verifies the self-calibration's putative matches, the whole stage can otherwise end before a polling test,
# starved on a loaded machine, reaches its kill point.
_EVERY_UNIT = (
    "import time, sfm3r.pipelines.classic as c, sfm3r.io.cache as k; c._COMMIT_SECONDS = 1e-9; "
    "_w = k.write_pair_result; k.write_pair_result = lambda *a, **kw: (_w(*a, **kw), time.sleep(0.2))[0]; "
)


# The alignment of the slow tests' four photos takes ~0.4 s, shorter than their random kill delay (up to 1 s)
# after the kill point's log line: the killed run waits 1.5 s before its coarse step and before its 2D
# refinement (the results are the same), so that the kill lands inside the alignment on any machine, and so
# that a run whose kill point was its last pairwise commit is still running (small scenes align on numpy
# since stop 26: no torch import any more to keep the tail of the run longer than the delay).
_SLOW_ALIGNMENT = (
    "import time, sfm3r.sfm.align.coarse_alignment as ca, sfm3r.sfm.align.reprojection_refinement as rr; "
    "_c, _r = ca.coarse_align, rr.refine_reprojection; "
    "ca.coarse_align = lambda *a, **kw: (time.sleep(1.5), _c(*a, **kw))[1]; "
    "rr.refine_reprojection = lambda *a, **kw: (time.sleep(1.5), _r(*a, **kw))[1]; "
)


def _start(
    photos: Path, out: Path, args: tuple[str, ...], every_unit: bool = False, slow_alignment: bool = False
) -> subprocess.Popen:
    command = cli_command()
    if every_unit:
        command[-1] = _EVERY_UNIT + command[-1]
    if slow_alignment:
        command[-1] = _SLOW_ALIGNMENT + command[-1]
    return subprocess.Popen(
        [*command, "reconstruct", str(photos), str(out), *args],
        env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _wait_for(process: subprocess.Popen, ready, timeout: float = 300.0) -> None:
    """Poll until `ready()`; fails if the process ends first (the kill point was missed)."""
    start = time.monotonic()
    while not ready():
        assert process.poll() is None, "the run finished before the planned kill point"
        assert time.monotonic() - start < timeout, "timed out waiting for the kill point"
        time.sleep(0.01)


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


_STAGE_STARTED = {
    "pairwise": re.compile(r"matching: \d+ pairs, "),  # logged when the pairwise stage starts
    "alignment": re.compile(r"matching: \d+ of \d+ pairs verified"),  # logged when it is done
}


def _stage_started(out: Path, stage: str, before: int) -> bool:
    """Whether the run logged the start of `stage` (more such lines than the `before` of earlier runs)."""
    return len(_STAGE_STARTED[stage].findall(_log(out))) > before


def _resume_and_check(photos: Path, out: Path, args, reference: Path, committed: int, num_pairs: int) -> None:
    """Rerun the same command; same model as the reference, nothing committed is recomputed."""
    assert_success(invoke("reconstruct", photos, out, *args))
    counts = run_json(out)["counts"]["matching"]
    assert counts["cached"] == committed and counts["computed"] == num_pairs - committed
    lines = re.findall(rf"matching: {num_pairs} pairs, (\d+) cached, (\d+) to compute", _log(out))
    assert lines[-1] == (str(committed), str(num_pairs - committed))
    assert not list((out / "cache").glob("*/shards/.*.tmp")), "the killed writer's temp shard was left behind"
    _assert_same_model(out, reference)


def _assert_same_model(out: Path, reference: Path) -> None:
    got, want = read_colmap_model(out / "sparse" / "0"), read_colmap_model(reference / "sparse" / "0")
    assert got.image_names == want.image_names
    np.testing.assert_allclose(got.rotations, want.rotations, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.translations, want.translations, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.points_xyz, want.points_xyz, rtol=0, atol=1e-9)
    intrinsics = [np.array([(c.fx, c.fy, c.cx, c.cy) for c in s.cameras]) for s in (got, want)]
    np.testing.assert_allclose(*intrinsics, rtol=0, atol=1e-9)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(p.name for p in (reference / "images").iterdir())


def test_kill_during_the_pairwise_stage_then_resume(photos, reference, tmp_path):
    """Killed once 4 pairs are committed: the rerun reads those and computes the rest."""
    out = tmp_path / "out"
    process = _start(photos, out, FAST, every_unit=True)
    try:
        _wait_for(process, lambda: _committed_pairs(out) >= 4)
        _kill(process)
    finally:
        if process.poll() is None:
            process.kill()
    committed = _committed_pairs(out)
    assert 4 <= committed < 15, "the kill should land inside the pairwise stage"
    assert not (out / "sparse").exists()
    _resume_and_check(photos, out, FAST, reference, committed, num_pairs=15)


# Kill points of the slow tests: a log line (the file log has DEBUG records), then a random delay shorter
# than what follows it, so the kill lands inside the stage whatever the machine's load.
_KILL_AFTER = {
    "pairwise": [r"committed \d+ cache units to \S*pairs-classic"],  # a pairwise batch committed (every 2 s)
    "alignment": [r"edge verification: ", r"coarse alignment: "],  # before the coarse step, before refinement
}


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("stage", ["pairwise", "alignment"])
def test_kill_at_random_points_then_resume(full_photos, full_reference, tmp_path, stage, seed):
    """kill -9 at a random moment of the stage (once, or twice in a row for seed 1), rerun, same model."""
    rng = random.Random(seed)
    out = tmp_path / "out"
    for _ in range(2 if seed == 1 else 1):
        if stage == "pairwise" and _committed_pairs(out) == 6:
            break  # the first kill came after the last pair was committed: no pairwise work left to interrupt
        if stage == "alignment" and list((out / "cache").glob("scene-alignment-*/shards/*.h5")):
            break  # the first kill came after the alignment was cached: a rerun aligns nothing to interrupt
        event = re.compile(rng.choice(_KILL_AFTER[stage]))
        before = len(event.findall(_log(out)))
        process = _start(full_photos, out, FULL_ARGS, slow_alignment=True)
        try:
            _wait_for(process, lambda: len(event.findall(_log(out))) > before)
            time.sleep(rng.uniform(0.0, 1.0))
            assert process.poll() is None, "the run finished before the planned kill point"
            _kill(process)
        finally:
            if process.poll() is None:
                process.kill()
    committed = _committed_pairs(out)
    if stage == "alignment":
        assert committed == 6  # the matching had finished and was committed
    else:
        assert committed >= 1  # at least the batch whose commit triggered the kill
    _resume_and_check(full_photos, out, FULL_ARGS, full_reference, committed, num_pairs=6)


@pytest.mark.slow
def test_deterministic_rerun_from_scratch(photos, reference, tmp_path):
    """Two uninterrupted runs into different folders give the same model."""
    out = tmp_path / "out"
    assert_success(invoke("reconstruct", photos, out, *FAST))
    _assert_same_model(out, reference)


def test_ctrl_c_says_how_to_resume_and_keeps_the_features(tmp_path, monkeypatch):
    import sfm3r.pipelines.reconstruct as reconstruct_module

    photos = photo_folder(tmp_path / "photos", SAMPLE_NAMES[:2])
    out = tmp_path / "out"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(reconstruct_module, "match_classic", interrupted)
        result = invoke("match", photos, out, *FAST)
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert "rerun the same command to resume" in result.output
    assert_success(invoke("match", photos, out, *FAST))
    assert run_json(out)["counts"]["features"] == {"total": 2, "cached": 2, "computed": 0}


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), pytest.param(signal.SIGHUP, 129, marks=pytest.mark.slow)]
)
def test_sigterm_or_sighup_mid_matching_says_how_to_resume_then_resumes(photos, reference, tmp_path, signum, code):
    """SIGTERM/SIGHUP once 4 pairs are committed: one resume line (no C stack dump), exit 128 + signal,
    the finished pairs committed; the rerun gives the uninterrupted run's model."""
    out = tmp_path / "out"
    command = cli_command()
    command[-1] = _EVERY_UNIT + command[-1]
    process = subprocess.Popen(
        [*command, "reconstruct", str(photos), str(out), *FAST],
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(process, lambda: _committed_pairs(out) >= 4)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, stderr
    assert "rerun the same command to resume" in stderr
    assert "stack trace" not in stderr and "Aborted" not in stderr and "Traceback" not in stderr, stderr
    committed = _committed_pairs(out)
    assert 4 <= committed <= 15
    if committed < 15:
        _resume_and_check(photos, out, FAST, reference, committed, num_pairs=15)
    else:  # the signal landed after the last pair: the rerun only aligns
        assert_success(invoke("reconstruct", photos, out, *FAST))
        _assert_same_model(out, reference)
