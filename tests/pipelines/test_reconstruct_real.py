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
