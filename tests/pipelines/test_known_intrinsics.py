"""--known-intrinsics in the pipeline: the given camera is the two-view prior, kept fixed, and keys the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sfm3r.io.colmap import read_colmap_model
from sfm3r.pipelines.config import preset_conf
from sfm3r.pipelines.reconstruct import Stage, reconstruct

SAMPLE = Path(__file__).resolve().parents[2] / "sample"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("0004.jpg", "0005.jpg", "0006.jpg"):
        shutil.copy(SAMPLE / "images" / name, folder / name)
    return folder


def test_known_cameras_are_the_matching_priors_and_stay_fixed(photos, tmp_path):
    out = tmp_path / "out"
    plain = reconstruct(photos, out, preset_conf("default", device="cpu"), stop_after=Stage.MATCH)
    assert plain.counts["matching"]["computed"] == 3
    known = reconstruct(photos, out, preset_conf("default", device="cpu", known_intrinsics=SAMPLE / "gt"),
                        stop_after=Stage.ALIGN)
    # the given focal replaced the self-calibrated prior, and the pairs were matched again with it
    assert {info.prior_focal_px for info in known.images} == {(689.87 + 691.04) / 2}
    assert known.counts["matching"]["computed"] == 3 and known.counts["matching"]["cached"] == 0
    written = read_colmap_model(out / "sparse" / "0")
    assert len(written.cameras) == 1
    camera = written.cameras[0]
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == pytest.approx((689.87, 691.04, 380.1725, 251.7025))


def _infos(names, size=(768, 512)):
    from sfm3r.types import ImageInfo

    return [ImageInfo(n, Path(n), "0" * 64, *size) for n in names]


@pytest.mark.parametrize("line, model, distortion", [
    ("1 OPENCV 768 512 700 702 384 256 -0.1 0.02 0.001 -0.002", "OPENCV", (-0.1, 0.02, 0.001, -0.002)),
    ("1 SIMPLE_RADIAL 768 512 700 384 256 -0.05", "SIMPLE_RADIAL", (-0.05,)),
    ("1 PINHOLE 768 512 700 700 384 256", "PINHOLE", ()),  # fx == fy: still PINHOLE (was SIMPLE_PINHOLE)
])  # fmt: skip
def test_known_cameras_keep_their_model_and_distortion(tmp_path, line, model, distortion):
    from sfm3r.pipelines.known_cameras import load_known_cameras

    (tmp_path / "cameras.txt").write_text(line + "\n")
    known = load_known_cameras(tmp_path / "cameras.txt", _infos(["a.jpg"]))
    camera = known["a.jpg"]
    assert camera.colmap_model()[0] == model and camera.distortion == distortion
    written = camera.colmap_model()[1]
    assert written == pytest.approx([float(v) for v in line.split()[4:]])  # what the writer emits
