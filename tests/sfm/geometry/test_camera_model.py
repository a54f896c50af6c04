"""geometry.camera_model: one CameraModel enum for the config and the bundle adjustment; one focal prior."""

from __future__ import annotations

import pytest

from sfm3r.errors import InputError
from sfm3r.sfm.geometry.camera_model import DEFAULT_FOCAL_FACTOR, WRITTEN_MODELS, CameraModel


def test_one_enum_everywhere_and_parsing_ignores_case():
    from sfm3r.pipelines import config
    from sfm3r.sfm import bundle_adjustment

    assert config.CameraModel is bundle_adjustment.CameraModel is CameraModel
    assert CameraModel("simple_pinhole") is CameraModel.SIMPLE_PINHOLE and CameraModel("PINHOLE") is CameraModel.PINHOLE
    with pytest.raises(ValueError):
        CameraModel("OPENCV")


def test_the_reconstruction_writes_only_explicit_models():
    from sfm3r.pipelines.config import ReconstructConf

    assert ReconstructConf(camera_model="simple_pinhole").camera_model is CameraModel.SIMPLE_PINHOLE
    assert CameraModel.AUTO not in WRITTEN_MODELS
    with pytest.raises(InputError, match="camera_model"):
        ReconstructConf(camera_model="AUTO")


def test_the_default_focal_factor_is_defined_once():
    from sfm3r.sfm import alignment, self_calibration, two_view

    assert DEFAULT_FOCAL_FACTOR == 1.2
    assert two_view.DEFAULT_FOCAL_FACTOR is self_calibration.DEFAULT_FACTOR is DEFAULT_FOCAL_FACTOR
    assert alignment.AlignConf().default_focal_factor == DEFAULT_FOCAL_FACTOR
