"""The whole default pipeline (classic backend) on the real sets with ground truth, against COLMAP.

The bars are pycolmap 4.2.1's exhaustive-SIFT incremental mapping on the same images, measured on this
project's machine (AUC@3 of pairwise relative poses): fountain 91.1, herzjesu 91.3, templeRing 59.3.
Slow (about 1-2 min per set on 2 cores): run with ``make test-all``.
"""

from __future__ import annotations

import pytest

from sfm3r.pipelines.config import preset_conf
from sfm3r.pipelines.evaluate import evaluate_models
from sfm3r.pipelines.reconstruct import Stage, reconstruct

from conftest import DATA


@pytest.mark.slow
@pytest.mark.parametrize(
    ("images", "gt", "colmap_auc3"),
    [
        ("strecha_fountain_P11/images_1024", "strecha_fountain_P11/gt_1024", 91.1),
        ("strecha_herzjesu_P8/images_1024", "strecha_herzjesu_P8/gt_1024", 91.3),
        ("middlebury_templeRing/images", "middlebury_templeRing/gt", 59.3),
    ],
)
def test_default_pipeline_beats_colmap_auc(tmp_path, images, gt, colmap_auc3):
    if not (DATA / images).is_dir():
        pytest.skip(f"{DATA / images} not found")
    result = reconstruct(DATA / images, tmp_path / "out", preset_conf("default", device="cpu"), stop_after=Stage.ALIGN)
    metrics = evaluate_models(result.run.sparse_dir, DATA / gt)
    assert metrics["registration_rate"] == 100.0, metrics
    assert metrics["AUC@3"] >= colmap_auc3, metrics
    assert metrics["focal_err_median"] < 0.01, metrics


@pytest.mark.slow
def test_the_temple_rings_sparse_subset_registers_every_image_through_bridges(tmp_path):
    """Every 3rd image of the ring (16): three of them share no verified pair with the others; the bridging
    stage links them through two weak links whose two-view solutions agree (pipelines/bridging.py)."""
    source = DATA / "middlebury_templeRing" / "images"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    images = tmp_path / "images"
    images.mkdir()
    for photo in sorted(source.glob("*.png"))[::3]:
        (images / photo.name).symlink_to(photo)
    result = reconstruct(images, tmp_path / "out", preset_conf("default", device="cpu"), stop_after=Stage.ALIGN)
    (component,) = result.counts["bridging"]
    assert sorted(component["images"]) == ["templeR0007.png", "templeR0010.png", "templeR0040.png"]
    assert component["registered"] and len(component["bridges"]) >= 2
    gt = tmp_path / "gt"  # the GT of the 16 images
    gt.mkdir()
    keep = {p.name for p in images.iterdir()}
    lines = (DATA / "middlebury_templeRing" / "gt" / "images.txt").read_text().splitlines()
    kept = []
    for line in lines:
        if line and not line.startswith("#") and len(line.split()) >= 10 and line.split()[9] in keep:
            kept += [line, ""]
    (gt / "images.txt").write_text("\n".join(kept) + "\n")
    for name in ("cameras.txt", "points3D.txt"):
        (gt / name).write_text((DATA / "middlebury_templeRing" / "gt" / name).read_text())
    metrics = evaluate_models(result.run.sparse_dir, gt)
    assert metrics["registration_rate"] == 100.0 and metrics["AUC@3"] > 80.0, metrics  # 60.1 with 13 of 16
