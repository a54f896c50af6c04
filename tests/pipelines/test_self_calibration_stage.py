"""The self-calibration stage of the classic pipeline: sets the prior focal of EXIF-less images, caches it."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from sfm3r.pipelines.classic import match_classic, match_putative, self_calibrate_focals
from sfm3r.pipelines.process_pool import WorkerPool
from sfm3r.sfm.classic.sift import SiftConf, SiftFeatures
from sfm3r.sfm.classic.two_view import TwoViewConf
from sfm3r.types import ImageInfo, Pairs

W, H, FOCAL = 640, 480, 1520.0


def _observe(pts, desc, centre, target, rng, width=W, height=H, focal=FOCAL) -> SiftFeatures:
    """The features a camera at `centre` looking at `target` sees: every visible point, 0.3 px noise."""
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    z = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross([0, 1.0, 0], z)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    p = (K @ (R @ (pts - centre).T)).T
    xy = p[:, :2] / p[:, 2:] + rng.normal(scale=0.3, size=(len(pts), 2))
    seen = (xy >= 0).all(1) & (xy < [width, height]).all(1)
    n = int(seen.sum())
    return SiftFeatures(
        keypoints=xy[seen].astype(np.float32), scales=np.ones(n, np.float32),
        orientations=np.zeros(n, np.float32), descriptors=desc[seen], width=width, height=height,
    )  # fmt: skip


def _scene(num_views: int = 6, seed: int = 0):
    """Synthetic views of one textured cloud: each 3D point has one random descriptor, seen everywhere."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-1.0, 1.0, size=(600, 3)) + [0, 0, 6.0]
    desc = rng.integers(0, 255, size=(len(pts), 128)).astype(np.uint8)
    features = {}
    for v in range(num_views):
        c = np.array([0.5 * v - 1.2, 0.3 * np.sin(v), 0.2 * v])  # not aimed at one point: generic motion
        features[f"v{v}.png"] = _observe(pts, desc, c, np.array([0.1 * np.cos(v), 0.05 * v, 6.0]), rng)
    return features


def _info(name: str, focal: float | None = None, width: int = W, height: int = H) -> ImageInfo:
    sha = hashlib.sha256(name.encode()).hexdigest()
    return ImageInfo(name=name, path=Path(name), sha256=sha, width=width, height=height, prior_focal_px=focal)


def test_sets_the_focal_of_exifless_images_only_and_reuses_the_cache(tmp_path, caplog):
    features = _scene()
    names = sorted(features)
    images = [_info(n) for n in names[:-1]] + [_info(names[-1], focal=999.0)]  # the last one has EXIF
    all_pairs = tuple((a, b) for k, a in enumerate(names) for b in names[k + 1 :])
    pairs = Pairs(names=tuple(names), pairs=all_pairs, scores=np.full(len(all_pairs), np.nan, np.float32),
                  sources=("complete",) * len(all_pairs))  # fmt: skip
    with caplog.at_level("INFO"):
        updated, calibrated = self_calibrate_focals(images, pairs, features, SiftConf(), TwoViewConf(), tmp_path)
    assert list(calibrated) == ["640x480"]
    assert calibrated["640x480"] == pytest.approx(FOCAL, rel=0.02)
    assert [u.name for u in updated] == names and [u.sha256 for u in updated] == [i.sha256 for i in images]
    assert all(u.prior_focal_px == calibrated["640x480"] for u in updated[:-1])
    assert updated[-1].prior_focal_px == 999.0
    assert "self-calibration: focal" in caplog.text

    # Rerun: read from the cache (same answer without matching), and images with known intrinsics skipped.
    cached = {n: f for n, f in features.items()}
    cached[names[0]] = None  # would fail if the stage recomputed the matches
    again, calibrated_again = self_calibrate_focals(images, pairs, cached, SiftConf(), TwoViewConf(), tmp_path)
    assert calibrated_again == calibrated
    skipped, _ = self_calibrate_focals(images, pairs, features, SiftConf(), TwoViewConf(), tmp_path, skip={names[0]})
    assert skipped[0].prior_focal_px is None


def _complete_graph() -> tuple[dict, list[ImageInfo], Pairs]:
    """The synthetic scene's features, its images (no EXIF) and the complete graph over them."""
    features = _scene()
    names = sorted(features)
    all_pairs = tuple((a, b) for k, a in enumerate(names) for b in names[k + 1 :])
    pairs = Pairs(names=tuple(names), pairs=all_pairs, scores=np.full(len(all_pairs), np.nan, np.float32),
                  sources=("complete",) * len(all_pairs))  # fmt: skip
    return features, [_info(n) for n in names], pairs


def test_matching_verifies_the_pairs_the_self_calibration_matched_without_matching_them_again(tmp_path, caplog):
    features, images, pairs = _complete_graph()
    all_pairs = pairs.pairs
    updated, calibrated = self_calibrate_focals(images, pairs, features, SiftConf(), TwoViewConf(), tmp_path)
    with caplog.at_level("INFO"):
        results, counts = match_classic(updated, pairs, features, SiftConf(), TwoViewConf(), tmp_path,
                                        self_calibrated=calibrated)  # fmt: skip
    assert counts.computed == len(all_pairs) and all(r.verified for r in results)
    assert f"matching: 0 pairs matched, {len(all_pairs)} matched already by the self-calibration" in caplog.text


def test_no_exifless_images_changes_nothing(tmp_path):
    images = [_info("a.png", 800.0), _info("b.png", 800.0)]
    pairs = Pairs(names=("a.png", "b.png"), pairs=(("a.png", "b.png"),), scores=np.zeros(1, np.float32),
                  sources=("complete",))  # fmt: skip
    updated, calibrated = self_calibrate_focals(images, pairs, {}, SiftConf(), TwoViewConf(), tmp_path)
    assert updated == images and calibrated == {}


def _turntable(num_views: int = 10, seed: int = 1):
    """A ring of cameras aimed at one object (critical motion for pairwise self-calibration)."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-0.6, 0.6, size=(800, 3))
    desc = rng.integers(0, 255, size=(len(pts), 128)).astype(np.uint8)
    features = {}
    for v in range(num_views):
        angle = 2 * np.pi * v / num_views
        c = np.array([6.0 * np.sin(angle), -1.0, -6.0 * np.cos(angle)])  # slightly above the object
        features[f"t{v}.png"] = _observe(pts, desc, c, np.zeros(3), rng)
    return features


def test_critical_motion_falls_back_to_the_multi_view_focal_sweep(tmp_path, caplog):
    """Pairwise self-calibration cannot see the focal of a turntable; aligning the pairs from several focal
    hypotheses and keeping the lowest reprojection error does (regression: templeRing AUC@3 0.4 -> 50)."""
    features = _turntable()
    names = sorted(features, key=lambda n: int(n[1:-4]))
    images = [_info(n) for n in names]
    window = tuple((names[k], names[(k + d) % len(names)]) for k in range(len(names)) for d in (1, 2))
    pairs = Pairs(names=tuple(names), pairs=window, scores=np.full(len(window), np.nan, np.float32),
                  sources=("swin",) * len(window))  # fmt: skip
    with caplog.at_level("DEBUG"):
        _, calibrated = self_calibrate_focals(images, pairs, features, SiftConf(), TwoViewConf(), tmp_path)
    assert "from the multi-view sweep" in caplog.text
    assert calibrated["640x480"] == pytest.approx(FOCAL, rel=0.03)
    # the sweep's trial alignments (a subset of the pairs) log at DEBUG: in the log file, not on the console
    trial = [r for r in caplog.records if r.name.startswith("sfm3r.sfm.align.")]
    assert any("reprojection refinement" in r.getMessage() for r in trial)
    assert {r.levelname for r in trial} == {"DEBUG"}
    assert not logging.getLogger("sfm3r.sfm.align.alignment").filters  # and only while the sweep runs
    # with the run's worker processes, the sweep verifies each hypothesis's pairs there: the same focal
    mapped = []
    with WorkerPool(2) as pool:
        real_map = pool.map
        pool.map = lambda function, items, **kw: (mapped.append(function.__name__), real_map(function, items, **kw))[1]
        _, in_workers = self_calibrate_focals(images, pairs, features, SiftConf(), TwoViewConf(), tmp_path / "pool",
                                              pool=pool)  # fmt: skip
    assert in_workers == calibrated
    assert "verify_job" in mapped


# Internet photos: (name, width, height, true focal); two share a size (a group whose one pair is too few).
PHOTOS = [("p0.jpg", 640, 480, 600.0), ("p1.jpg", 800, 600, 900.0), ("p2.jpg", 480, 640, 1400.0),
          ("p3.jpg", 1024, 768, 1100.0), ("p4.jpg", 800, 600, 750.0), ("p5.jpg", 900, 600, 1000.0)]  # fmt: skip


def _photos(seed: int = 2):
    """Synthetic views of one cloud by cameras of different sizes and focals, from generic directions."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-1.5, 1.5, size=(1500, 3))
    desc = rng.integers(0, 255, size=(len(pts), 128)).astype(np.uint8)
    features = {}
    for name, width, height, focal in PHOTOS:
        direction = rng.normal(size=3) * [1, 0.3, 1]
        centre = 7.0 * direction / np.linalg.norm(direction)
        features[name] = _observe(pts, desc, centre, rng.normal(scale=0.5, size=3), rng, width, height, focal)
    return features


def test_images_alone_in_their_size_get_their_own_focal_from_pairs_with_any_image(tmp_path, caplog):
    """Internet photos (regression: Sacre-Coeur, every image a different camera, was left at the 1.2 max(W, H)
    default, AUC@3 0.0): per-image focals from the pairs across sizes, an EXIF focal held fixed."""
    features = _photos()
    exif = "p5.jpg"
    images = [_info(n, focal=f if n == exif else None, width=w, height=h) for n, w, h, f in PHOTOS]
    names = [n for n, *_ in PHOTOS]
    all_pairs = tuple((a, b) for k, a in enumerate(names) for b in names[k + 1 :])
    pairs = Pairs(names=tuple(names), pairs=all_pairs, scores=np.full(len(all_pairs), np.nan, np.float32),
                  sources=("complete",) * len(all_pairs))  # fmt: skip
    with caplog.at_level("INFO"):
        updated, calibrated = self_calibrate_focals(images, pairs, features, SiftConf(), TwoViewConf(), tmp_path)
    assert "no focal for the 2 images of 800x600" in caplog.text  # one pair within the size: too few
    assert sorted(calibrated) == names[:5]  # per image, keyed by name; not the EXIF one
    for (name, *_, focal), info in zip(PHOTOS, updated, strict=True):
        assert info.prior_focal_px == pytest.approx(focal, rel=0.015), name
        assert name == exif or calibrated[name] == info.prior_focal_px

    cached = dict(features, **{names[0]: None})  # would fail if the stage recomputed the matches
    _, again = self_calibrate_focals(images, pairs, cached, SiftConf(), TwoViewConf(), tmp_path)
    assert again == calibrated


def test_a_photo_with_one_strong_pair_gets_its_focal_and_the_pair_verifies(tmp_path):
    """Regression (Sacre-Coeur sparse, 4 of 5 registered): a photo whose only usable pair reaches a calibrated
    photo kept the 1.2 max(W, H) default focal (1280 px for 858), and the calibrated check of its one link
    then kept 24 of 223 true matches. One F with the other focal known fixes its focal."""
    name, width, height, focal = "p6.jpg", 1067, 694, 858.0
    features = _photos()
    rng = np.random.default_rng(2)  # the cloud and descriptors of _photos
    pts = rng.uniform(-1.5, 1.5, size=(1500, 3))
    desc = rng.integers(0, 255, size=(len(pts), 128)).astype(np.uint8)
    centre = 7.0 * np.array([0.9, 0.1, 0.45]) / np.linalg.norm([0.9, 0.1, 0.45])
    features[name] = _observe(pts, desc, centre, np.zeros(3), np.random.default_rng(3), width, height, focal)
    names = [n for n, *_ in PHOTOS]
    graph = tuple((a, b) for k, a in enumerate(names) for b in names[k + 1 :]) + (("p1.jpg", name),)
    pairs = Pairs(names=(*names, name), pairs=graph, scores=np.full(len(graph), np.nan, np.float32),
                  sources=("complete",) * len(graph))  # fmt: skip
    images = [_info(n, width=w, height=h) for n, w, h, _ in PHOTOS] + [_info(name, width=width, height=height)]
    updated, calibrated = self_calibrate_focals(images, pairs, features, SiftConf(), TwoViewConf(), tmp_path)
    assert calibrated["p1.jpg"] == pytest.approx(900.0, rel=0.015)
    assert name in calibrated and calibrated[name] == pytest.approx(focal, rel=0.015)
    link = Pairs(names=pairs.names, pairs=graph[-1:], scores=pairs.scores[-1:], sources=pairs.sources[-1:])
    (result,), _ = match_classic(updated, link, features, SiftConf(), TwoViewConf(), tmp_path,
                                 self_calibrated=calibrated)  # fmt: skip
    assert result.verified


def test_putative_matching_stores_every_pair_once_for_the_later_stages(tmp_path, caplog):
    features, images, pairs = _complete_graph()
    all_pairs = pairs.pairs
    counts = match_putative(images, pairs, features, SiftConf(), TwoViewConf(), tmp_path)
    assert (counts.total, counts.cached, counts.computed) == (len(all_pairs), 0, len(all_pairs))
    assert match_putative(images, pairs, features, SiftConf(), TwoViewConf(), tmp_path).computed == 0
    updated, calibrated = self_calibrate_focals(images, pairs, features, SiftConf(), TwoViewConf(), tmp_path)
    with caplog.at_level("INFO"):
        results, _ = match_classic(updated, pairs, features, SiftConf(), TwoViewConf(), tmp_path,
                                   self_calibrated=calibrated)  # fmt: skip
    assert all(r.verified for r in results)
    assert f"matching: 0 pairs matched, {len(all_pairs)} matched already by the self-calibration" in caplog.text


def test_stored_putative_counts_read_the_store_and_match_nothing(tmp_path):
    from sfm3r.pipelines.classic import stored_putative_counts

    features, images, pairs = _complete_graph()
    a, b = pairs.pairs[0]
    assert stored_putative_counts(images, [(a, b)], SiftConf(), TwoViewConf(), tmp_path) == {}  # nothing stored yet
    match_putative(images, pairs, features, SiftConf(), TwoViewConf(), tmp_path)
    found = stored_putative_counts(images, [(a, b), (b, a), (a, "missing.png")], SiftConf(), TwoViewConf(), tmp_path)
    assert set(found) == {(a, b), (b, a)} and found[(a, b)] == found[(b, a)] > 100
