"""SIFT through COLMAP's own extraction pipeline in threads (pipelines/colmap_sift.py), and which files it gets."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sfm3r.io.images import decoded_alike_by_colmap, read_image
from sfm3r.pipelines import colmap_sift
from sfm3r.pipelines.classic import extract_features
from sfm3r.pipelines.process_pool import map_in_threads
from sfm3r.sfm.classic.sift import SiftConf, SiftFeatures, extract_sift
from sfm3r.types import ImageInfo

SAMPLE = Path(__file__).resolve().parents[2] / "sample" / "images"
CONF = SiftConf(max_image_size=320, max_num_features=512)  # downscaled and capped: both mappings are exercised


def _assert_same_features(found: SiftFeatures, expected: SiftFeatures) -> None:
    assert (found.width, found.height) == (expected.width, expected.height)
    assert len(found) == len(expected) > 50
    assert np.array_equal(found.keypoints, expected.keypoints)
    assert np.array_equal(found.descriptors, expected.descriptors)
    np.testing.assert_allclose(found.scales, expected.scales, rtol=1e-5)
    np.testing.assert_allclose(np.angle(np.exp(1j * (found.orientations - expected.orientations))), 0, atol=1e-5)


def _info(path: Path) -> ImageInfo:
    width, height = Image.open(path).size
    return ImageInfo(name=path.name, path=path, sha256=path.name.encode().hex(), width=width, height=height)


def _upright_files(tmp_path: Path) -> list[Path]:
    """An RGB JPEG, a grey PNG and an RGB PNG of the sample photos."""
    jpeg = SAMPLE / "0002.jpg"
    rgb = np.asarray(Image.open(SAMPLE / "0003.jpg").convert("RGB"))
    grey_png, rgb_png = tmp_path / "grey.png", tmp_path / "rgb.png"
    Image.fromarray(rgb).convert("L").save(grey_png)
    Image.fromarray(rgb).save(rgb_png)
    return [jpeg, grey_png, rgb_png]


def test_colmap_extraction_equals_sift_of_the_decoded_image(tmp_path):
    paths = _upright_files(tmp_path)
    found = list(colmap_sift.colmap_sift_of_files(paths, CONF, tmp_path, workers=2))
    for path, features in zip(paths, found, strict=True):
        assert features is not None
        _assert_same_features(features, extract_sift(read_image(path), CONF))
    assert not list(tmp_path.glob("sfm3r-sift-*"))  # the temporary databases are gone


def test_only_files_colmap_decodes_alike_go_to_colmap(tmp_path):
    rgb = np.asarray(Image.open(SAMPLE / "0002.jpg").convert("RGB"))[:200, :300]
    for path in _upright_files(tmp_path):
        assert decoded_alike_by_colmap(path), path
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned by 90°: COLMAP's reader would see the stored pixels
    Image.fromarray(rgb).save(rotated, exif=exif)
    rgba = tmp_path / "alpha.png"
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(rgba)
    deep = tmp_path / "deep.png"
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(deep)
    webp = tmp_path / "photo.webp"
    Image.fromarray(rgb).save(webp)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    for path in (rotated, rgba, deep, webp, broken, tmp_path / "missing.jpg"):
        assert not decoded_alike_by_colmap(path), path


def test_extract_features_gives_every_image_the_same_features_by_either_route(tmp_path, caplog):
    rgb = np.asarray(Image.open(SAMPLE / "0004.jpg").convert("RGB"))
    rotated = tmp_path / "images" / "rotated.jpg"
    rotated.parent.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(rotated, exif=exif, quality=95)
    paths = [*_upright_files(tmp_path), rotated]
    infos = [_info(p) for p in paths[:3]] + [
        ImageInfo(name="rotated.jpg", path=rotated, sha256="r0", width=rgb.shape[0], height=rgb.shape[1])
    ]
    with caplog.at_level(logging.INFO, logger="sfm3r"):
        found, counts = extract_features(infos, CONF, tmp_path / "cache", processes=2)
    assert "3 by COLMAP's reader (threads), 1 from decoded arrays" in caplog.text
    assert (counts.total, counts.computed) == (4, 4)
    for info in infos:
        _assert_same_features(found[info.name], extract_sift(read_image(info.path), CONF))
    by_arrays, _ = extract_features(infos, CONF, tmp_path / "cache2", processes=2, colmap_reader=False)
    for info in infos:
        _assert_same_features(found[info.name], by_arrays[info.name])


def test_a_file_colmap_does_not_read_is_extracted_from_its_array(tmp_path, monkeypatch):
    paths = _upright_files(tmp_path)
    real = colmap_sift.colmap_sift_of_file
    monkeypatch.setattr(colmap_sift, "colmap_sift_of_file", lambda path, *a, **k: None if path == paths[1] else real(path, *a, **k))
    found, _ = extract_features([_info(p) for p in paths], CONF, tmp_path / "cache", processes=2)
    _assert_same_features(found["grey.png"], extract_sift(read_image(paths[1]), CONF))


def test_threads_give_results_in_order_and_stop_early_without_starting_the_rest():
    assert list(map_in_threads(lambda x: x * x, range(20), workers=3)) == [k * k for k in range(20)]
    with pytest.raises(ZeroDivisionError):
        list(map_in_threads(lambda x: 1 / x, [1, 2, 0, 4], workers=2))
    started, gate = [], threading.Event()

    def slow(k: int) -> int:
        started.append(k)
        gate.wait(timeout=10)
        return k

    results = map_in_threads(slow, range(50), workers=2)
    gate.set()
    assert next(results) == 0
    results.close()  # the caller stops: items not started are dropped
    assert len(started) < 50


def test_verification_in_threads_equals_verification_here():
    from sfm3r.pipelines.classic_jobs import verify_job
    from sfm3r.sfm.classic.two_view import TwoViewConf, camera_prior, match_descriptors

    conf = SiftConf(max_image_size=640, max_num_features=1024)
    paths = sorted(SAMPLE.glob("*.jpg"))[:4]
    feats = [extract_sift(read_image(p), conf) for p in paths]
    jobs = []
    for i, j in [(0, 1), (1, 2), (2, 3), (0, 2), (1, 3)]:
        a, b = feats[i], feats[j]
        matches = match_descriptors(a.descriptors, b.descriptors)
        prior_a, prior_b = camera_prior(a.width, a.height), camera_prior(b.width, b.height)
        jobs.append((paths[i].name, paths[j].name, a.keypoints, b.keypoints, prior_a, prior_b, matches, TwoViewConf()))
    here = [verify_job(job) for job in jobs]
    threaded = list(map_in_threads(verify_job, jobs, workers=2))
    assert any(r.verified for r in here)
    for ours, ref in zip(threaded, here, strict=True):
        assert (ours.verified, ours.num_inliers) == (ref.verified, ref.num_inliers)
        assert np.array_equal(ours.idx_i, ref.idx_i) and np.array_equal(ours.pts_i, ref.pts_i)
