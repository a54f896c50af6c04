"""The multi-view focal sweep's order and early stop, with the alignment replaced by a model of its basins."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from sfm3r.sfm.classic import focal_sweep
from sfm3r.types import ImageInfo

W, H = 640, 480


def _info(name: str) -> ImageInfo:
    return ImageInfo(name=name, path=Path(name), sha256=hashlib.sha256(name.encode()).hexdigest(), width=W, height=H)


def _fake_alignment(monkeypatch, basins):
    """align_scene stand-in: a start focal f ends at the basin (lo, hi, refined, error) containing it."""
    started = []

    def align_scene(results, images, conf, *, report_left_out):
        assert report_left_out is False  # a trial alignment of a subset: no warnings about left-out images
        f = images[0].prior_focal_px
        started.append(f)
        _, _, refined, error = next(b for b in basins if b[0] <= f < b[1])
        cameras = [SimpleNamespace(fx=refined)]
        return SimpleNamespace(points_error=np.full(10, error), cameras=cameras, num_images=len(images))

    monkeypatch.setattr(focal_sweep, "align_scene", align_scene)
    monkeypatch.setattr(focal_sweep, "verify_keypoint_matches", lambda *args: None)
    return started


PAIRS = [(_info("a.png"), _info("b.png")), (_info("b.png"), _info("c.png"))]
PUTATIVE = {("a.png", "b.png"): None, ("b.png", "c.png"): None}
FEATURES = {name: SimpleNamespace(keypoints=None) for name in ("a.png", "b.png", "c.png")}
# starts 512 / 768 / 1152 / 1728 / 2560 px (factors of 640); true focal ~1510, basin from ~1000 to ~2000
BASINS = [(0, 600, 1099.0, 0.132), (600, 1000, 1386.0, 0.118), (1000, 2000, 1510.0, 0.116), (2000, 1e9, 1988.0, 0.144)]


def test_stops_once_two_starts_converge_and_keeps_the_lowest_error(monkeypatch):
    started = _fake_alignment(monkeypatch, BASINS)
    out = focal_sweep.multi_view_focal_sweep(PAIRS, PUTATIVE, FEATURES, W, H, conf=None, guess_px=1500.0)
    assert out.focal_px == 1510.0
    assert started == [1728.0, 1152.0]  # nearest the pairwise guess first; both end at 1510: stop


def test_without_agreement_every_hypothesis_is_tried(monkeypatch):
    basins = [(0, 600, 1099.0, 0.132), (600, 1000, 1386.0, 0.118), (1000, 1500, 1450.0, 0.117),
              (1500, 2000, 1560.0, 0.116), (2000, 1e9, 1988.0, 0.144)]  # fmt: skip
    started = _fake_alignment(monkeypatch, basins)
    out = focal_sweep.multi_view_focal_sweep(PAIRS, PUTATIVE, FEATURES, W, H, conf=None)
    assert out.focal_px == 1560.0
    assert started[0] == 768.0  # no guess: nearest COLMAP's default 1.2 x 640 first
    assert sorted(started) == [512.0, 768.0, 1152.0, 1728.0, 2560.0]  # no two agree: every start is aligned


def test_a_guess_outside_the_swept_range_is_no_hint(monkeypatch):
    started = _fake_alignment(monkeypatch, BASINS)
    out = focal_sweep.multi_view_focal_sweep(PAIRS, PUTATIVE, FEATURES, W, H, conf=None, guess_px=296.0)
    assert started[0] == 768.0 and out.focal_px == 1510.0  # (templeRing's flat curve has its minimum at 296 px)


def test_starts_that_leave_an_image_out_may_still_agree(monkeypatch):
    """Two starts placing the most images so far (not necessarily all) that agree end the sweep."""
    started = _fake_alignment(monkeypatch, BASINS)
    real = focal_sweep.align_scene

    def one_image_short(results, images, conf, **options):
        scene = real(results, images, conf, **options)
        scene.num_images = len(images) - 1
        return scene

    monkeypatch.setattr(focal_sweep, "align_scene", one_image_short)
    out = focal_sweep.multi_view_focal_sweep(PAIRS, PUTATIVE, FEATURES, W, H, conf=None, guess_px=1500.0)
    assert started == [1728.0, 1152.0] and out.focal_px == 1510.0
