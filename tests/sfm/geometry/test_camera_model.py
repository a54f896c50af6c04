"""geometry.camera_model: one CameraModel enum for the config and the bundle adjustment; one focal prior."""

from __future__ import annotations

import pytest

from sfm3r.errors import InputError
from sfm3r.sfm.geometry.camera_model import DEFAULT_FOCAL_FACTOR, WRITTEN_MODELS, CameraModel


def test_one_enum_everywhere_and_parsing_ignores_case():
    from sfm3r.pipelines import config
    from sfm3r.sfm.align import bundle_adjustment

    assert config.CameraModel is bundle_adjustment.CameraModel is CameraModel
    assert CameraModel("simple_pinhole") is CameraModel.SIMPLE_PINHOLE and CameraModel("PINHOLE") is CameraModel.PINHOLE
    assert CameraModel("opencv") is CameraModel.OPENCV
    with pytest.raises(ValueError):
        CameraModel("FISHEYE")


def test_the_reconstruction_takes_every_model_and_maps_it_to_a_lens():
    from sfm3r.pipelines.config import ReconstructConf
    from sfm3r.sfm.align.alignment import Lens

    assert ReconstructConf(camera_model="simple_pinhole").camera_model is CameraModel.SIMPLE_PINHOLE
    assert set(WRITTEN_MODELS) == set(CameraModel)
    assert ReconstructConf(camera_model="auto").lens is Lens.AUTO
    assert ReconstructConf(camera_model="PINHOLE").lens is Lens.NONE
    assert ReconstructConf(camera_model="OPENCV").lens is Lens.OPENCV
    with pytest.raises(InputError, match="camera_model"):
        ReconstructConf(camera_model="FISHEYE")


def test_the_default_focal_factor_is_defined_once():
    from sfm3r.sfm.align import alignment
    from sfm3r.sfm.classic import self_calibration
    from sfm3r.sfm.classic import two_view

    assert DEFAULT_FOCAL_FACTOR == 1.2
    assert two_view.DEFAULT_FOCAL_FACTOR is self_calibration.DEFAULT_FACTOR is DEFAULT_FOCAL_FACTOR
    assert alignment.AlignConf().default_focal_factor == DEFAULT_FOCAL_FACTOR
