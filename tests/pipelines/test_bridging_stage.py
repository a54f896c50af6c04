"""The bridging stage on real photos: a stray photo stays out (no agreeing links), and a rerun reads every
verification from the cache. (Bridges that register images: tests/pipelines/test_reconstruct_real.py, slow.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import sfm3r.pipelines.bridging as bridging
from sfm3r.pipelines.config import preset_conf
from sfm3r.pipelines.reconstruct import Stage, reconstruct

from conftest import DATA

SAMPLE = Path(__file__).resolve().parents[2] / "sample" / "images"
STRAY = DATA / "sacre_coeur" / "images" / "02928139_3448003521.jpg"


def test_a_stray_photo_gets_no_bridge_and_a_rerun_verifies_nothing(tmp_path, monkeypatch):
    if not STRAY.is_file():
        pytest.skip(f"{STRAY} not found")
    images = tmp_path / "images"
    shutil.copytree(SAMPLE, images)
    shutil.copy(STRAY, images / STRAY.name)
    conf = preset_conf("default", device="cpu")
    first = reconstruct(images, tmp_path / "out", conf, stop_after=Stage.ALIGN)
    assert first.scene.unregistered == (STRAY.name,) and first.scene.num_images == 6
    assert first.counts["bridging"] == [{"images": [STRAY.name], "links": 6, "registered": False, "bridges": []}]
    assert "bridging" in first.timings

    def no_verification(*args, **kwargs):
        raise AssertionError("a rerun verified a bridge candidate again")

    monkeypatch.setattr(bridging, "verify_keypoint_matches", no_verification)
    again = reconstruct(images, tmp_path / "out", conf, stop_after=Stage.ALIGN)
    assert again.counts["bridging"] == first.counts["bridging"] and again.scene.num_images == 6
