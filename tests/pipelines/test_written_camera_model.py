"""The camera model written to sparse/0 (pipelines/reconstruct._apply_camera_model)."""

from __future__ import annotations

import dataclasses

from report_scenes import arc_scene

from sfm3r.pipelines.config import CameraModel
from sfm3r.pipelines.reconstruct import _apply_camera_model


def test_a_lens_model_that_kept_the_pinhole_is_written_as_pinhole_not_simple_pinhole():
    scene = arc_scene()
    square = dataclasses.replace(scene.cameras[0], fy=scene.cameras[0].fx, model="SIMPLE_PINHOLE")
    scene = dataclasses.replace(scene, cameras=(square, *scene.cameras[1:]))
    for model in (CameraModel.AUTO, CameraModel.SIMPLE_RADIAL, CameraModel.PINHOLE):
        assert _apply_camera_model(scene, model).cameras[0].model == "PINHOLE", model
    assert _apply_camera_model(scene, CameraModel.SIMPLE_PINHOLE).cameras[0].model == "SIMPLE_PINHOLE"
    lens = dataclasses.replace(square, model="SIMPLE_RADIAL", distortion=(-0.1,))
    kept = dataclasses.replace(scene, cameras=(lens, *scene.cameras[1:]))
    assert _apply_camera_model(kept, CameraModel.AUTO).cameras[0] == lens
