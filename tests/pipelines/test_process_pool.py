"""Worker processes for per-image work (pipelines/process_pool.py): order, errors, and no re-run of __main__."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sfm3r.errors import ImageReadError
from sfm3r.pipelines.classic_jobs import sift_of_file
from sfm3r.pipelines.process_pool import map_in_processes
from sfm3r.sfm.classic.sift import SiftConf, extract_sift

SAMPLE = Path(__file__).resolve().parents[2] / "sample" / "images"


def test_results_come_back_in_order_from_two_workers():
    items = [float(k * k) for k in range(12)]
    assert list(map_in_processes(math.sqrt, items, workers=2)) == [float(k) for k in range(12)]


def test_sift_in_workers_equals_sift_here_and_errors_reach_the_caller(tmp_path):
    conf = SiftConf(max_image_size=320, max_num_features=512)
    paths = sorted(SAMPLE.glob("*.jpg"))[:3]
    found = list(map_in_processes(sift_of_file, [(p, conf) for p in paths], workers=2))
    for path, features in zip(paths, found, strict=True):
        here = extract_sift(np.asarray(Image.open(path).convert("RGB")), conf)
        assert np.array_equal(features.keypoints, here.keypoints)
        assert np.array_equal(features.descriptors, here.descriptors)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        list(map_in_processes(sift_of_file, [(paths[0], conf), (broken, conf), (paths[1], conf)], workers=2))


def test_a_script_without_a_main_guard_is_not_run_again_by_the_workers(tmp_path):
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent("""
        import math
        from sfm3r.pipelines.process_pool import map_in_processes
        print("script body ran")
        print(list(map_in_processes(math.sqrt, [1.0, 4.0, 9.0, 16.0], workers=2)))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": ":".join(p for p in sys.path if p), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["script body ran", "[1.0, 2.0, 3.0, 4.0]"]


def test_verification_in_workers_equals_verification_here():
    from sfm3r.pipelines.classic_jobs import verify_job
    from sfm3r.sfm.classic.two_view import TwoViewConf, camera_prior, match_descriptors, verify_matches

    conf = SiftConf(max_image_size=640, max_num_features=1024)
    paths = sorted(SAMPLE.glob("*.jpg"))[:4]
    feats = [extract_sift(np.asarray(Image.open(p).convert("RGB")), conf) for p in paths]
    jobs, expected = [], []
    for i, j in [(0, 1), (1, 2), (2, 3), (0, 2)]:
        a, b = feats[i], feats[j]
        prior_a, prior_b = camera_prior(a.width, a.height), camera_prior(b.width, b.height)
        matches = match_descriptors(a.descriptors, b.descriptors)
        jobs.append((paths[i].name, paths[j].name, a.keypoints, b.keypoints, prior_a, prior_b, matches, TwoViewConf()))
        expected.append(verify_matches(paths[i].name, paths[j].name, a, b, prior_a, prior_b, matches))
    found = list(map_in_processes(verify_job, jobs, workers=2))
    assert any(r.verified for r in expected)
    for ours, ref in zip(found, expected, strict=True):
        assert (ours.name_i, ours.name_j, ours.verified, ours.num_inliers) == (ref.name_i, ref.name_j, ref.verified, ref.num_inliers)
        assert np.array_equal(ours.idx_i, ref.idx_i) and np.array_equal(ours.pts_i, ref.pts_i)


def test_a_pool_keeps_its_workers_for_the_next_map_and_starts_fresh_ones_after_an_error():
    from sfm3r.pipelines.process_pool import WorkerPool

    with WorkerPool(2) as pool:
        assert pool.processes == []  # nothing started before a map needs it
        assert list(pool.map(math.sqrt, [1.0, 4.0, 9.0])) == [1.0, 2.0, 3.0]
        first = list(pool.processes)
        assert len(first) == 2 and all(p.poll() is None for p in first)
        assert list(pool.map(math.factorial, [3, 4, 5, 6])) == [6, 24, 120, 720]  # another function, same workers
        assert pool.processes == first
        with pytest.raises(ValueError):
            list(pool.map(math.factorial, [3, -1, 5, 6]))
        assert pool.processes == []  # a failed map ends its workers ...
        assert list(pool.map(math.sqrt, [16.0, 25.0, 36.0])) == [4.0, 5.0, 6.0]  # ... and the next starts new ones
        assert pool.processes and all(p not in first for p in pool.processes)
    assert pool.processes == []
    for process in first:
        assert process.wait(timeout=30) == 0  # ended by the end of their input, not killed


def test_self_calibration_fundamentals_in_workers_equal_those_here():
    from sfm3r.pipelines.classic_jobs import fundamental_job
    from sfm3r.sfm.classic.two_view import match_descriptors

    conf = SiftConf(max_image_size=640, max_num_features=1024)
    paths = sorted(SAMPLE.glob("*.jpg"))[:4]
    feats = [extract_sift(np.asarray(Image.open(p).convert("RGB")), conf) for p in paths]
    jobs = []
    for i, j in [(0, 1), (1, 2), (2, 3)]:
        m = match_descriptors(feats[i].descriptors, feats[j].descriptors)
        jobs.append((feats[i].keypoints[m[:, 0]].astype(np.float64), feats[j].keypoints[m[:, 1]].astype(np.float64), 3.0, 100, 0.999))
    here = [fundamental_job(job) for job in jobs]
    there = list(map_in_processes(fundamental_job, jobs, workers=2))
    assert all(h is not None and h[1] >= 30 for h in here)
    for (f_here, n_here), (f_there, n_there) in zip(here, there, strict=True):
        assert n_here == n_there and np.array_equal(f_here, f_there)
