"""End to end through the command line on real photos (the bundled fountain-P11 sample, 5 of 6 images).

Five images share one camera, so its principal point is refined and the 3DGS folder crops them to centre it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from click.testing import CliRunner
from PIL import Image

import sfm3r
from sfm3r.cli.main import cli
from sfm3r.io.colmap import read_colmap_model
from sfm3r.pipelines.torch_build import installed_torch_build

SAMPLE = Path(__file__).resolve().parents[2] / "sample"
NAMES = ["0003.jpg", "0004.jpg", "0005.jpg", "0006.jpg", "0007.jpg"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in NAMES:
        shutil.copy(SAMPLE / "images" / name, folder / name)
    return folder


def _invoke(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def full_run(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    result = _invoke("reconstruct", photos, out, "--quiet")
    assert result.exit_code == 0, result.output
    return out


def test_evaluate_writes_its_json_into_the_run_folder_as_an_sfm3r_file(full_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    result = _invoke("evaluate", out, SAMPLE / "gt")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "evaluation.json").read_text())["num_images"] == 6
    assert "evaluation.json" in json.loads((out / "sfm3r-manifest.json").read_text())["files"]
    # a file of the user's with that name is not replaced
    other = tmp_path / "other"
    shutil.copytree(full_run, other)
    (other / "evaluation.json").write_text("mine")
    result = CliRunner().invoke(cli, ["evaluate", str(other), str(SAMPLE / "gt")])
    assert result.exit_code == 2 and "not written by sfm3r" in result.output
    assert (other / "evaluation.json").read_text() == "mine"


def test_reconstruct_registers_every_image_accurately(full_run):
    result = _invoke("evaluate", full_run, SAMPLE / "gt", "--json", full_run / "metrics.json")
    assert result.exit_code == 0, result.output
    metrics = json.loads((full_run / "metrics.json").read_text())
    assert metrics["num_images"] == 6  # the GT has all six sample images
    est = read_colmap_model(full_run / "sparse" / "0")
    assert sorted(est.image_names) == NAMES
    # Relative poses among the registered images: every one within 1 degree of the GT.
    gt = read_colmap_model(SAMPLE / "gt")
    sub = [gt.image_names.index(n) for n in NAMES]
    gt_r = gt.rotations[sub]
    est_r = est.rotations[[est.image_names.index(n) for n in NAMES]]
    for a in range(len(NAMES)):
        for b in range(a + 1, len(NAMES)):
            rel_est = est_r[b] @ est_r[a].T
            rel_gt = gt_r[b] @ gt_r[a].T
            angle = np.degrees(np.arccos(np.clip((np.trace(rel_est @ rel_gt.T) - 1) / 2, -1, 1)))
            assert angle < 1.0


def test_output_folder_is_ready_for_gaussian_splatting(full_run):
    rec = pycolmap.Reconstruction(str(full_run / "sparse" / "0"))
    assert rec.num_reg_images() == len(NAMES) and len(rec.cameras) == 1  # one size, no EXIF: one camera
    assert rec.num_points3D() > 500
    for image in rec.images.values():
        camera = rec.cameras[image.camera_id]
        assert camera.model.name == "PINHOLE"  # the default --camera-model, also when fx == fy
        # cropped (by at most a few %) so that the refined principal point is at the centre, for graphdeco
        assert 0.95 * 768 < camera.width <= 768 and 0.95 * 512 < camera.height <= 512
        cx, cy = camera.principal_point_x, camera.principal_point_y
        assert abs(cx - camera.width / 2) <= 0.5 and abs(cy - camera.height / 2) <= 0.5
        with Image.open(full_run / "images" / image.name) as photo:
            assert photo.size == (camera.width, camera.height) and photo.format == "JPEG"
    for name in ("points.ply", "preview.png", "run.json", "log.txt", "pairs.txt"):
        assert (full_run / name).is_file(), name
    run = json.loads((full_run / "run.json").read_text())
    assert run["backend"] == "classic"
    assert run["counts"]["scene"]["registered"] == len(NAMES)
    # the counts describe sparse/0 as written (after the export crop), and the points are multi-view tracks
    assert run["counts"]["scene"]["points"] == rec.num_points3D()
    assert rec.compute_mean_track_length() > 3.0 and run["counts"]["scene"]["mean_track_length"] > 3.0
    # seen in 3 or more images (the default --min-track-length), unless an image would keep fewer than 100;
    # the export's centring crop may take a border observation from a few
    points = run["counts"]["points"]
    assert points["min_track_length"] == 3 and points["dropped"] > 0
    sparse = {image.image_id for image in rec.images.values() if image.name in points["sparse_images"]}
    short = [point for point in rec.points3D.values() if len(point.track.elements) < 3
             and not {element.image_id for element in point.track.elements} & sparse]
    assert len(short) <= 0.01 * rec.num_points3D()
    assert not (full_run / "distorted").exists()  # pinhole cameras: nothing undistorted


def test_resume_after_the_pairwise_stage_recomputes_nothing(photos, full_run, tmp_path):
    out = tmp_path / "out"
    assert _invoke("match", photos, out, "--quiet").exit_code == 0
    first = json.loads((out / "run.json").read_text())["counts"]["matching"]
    assert first["computed"] == 10 and first["cached"] == 0
    assert _invoke("reconstruct", photos, out, "--quiet").exit_code == 0
    second = json.loads((out / "run.json").read_text())["counts"]
    assert second["matching"]["computed"] == 0 and second["matching"]["cached"] == 10
    assert second["features"]["computed"] == 0
    assert "matching: 10 pairs, 10 cached, 0 to compute" in (out / "log.txt").read_text()
    # Same result as the uninterrupted run.
    resumed = read_colmap_model(out / "sparse" / "0")
    reference = read_colmap_model(full_run / "sparse" / "0")
    assert resumed.image_names == reference.image_names
    np.testing.assert_allclose(resumed.rotations, reference.rotations, atol=1e-9)
    np.testing.assert_allclose(resumed.translations, reference.translations, atol=1e-9)
    np.testing.assert_allclose(resumed.points_xyz, reference.points_xyz, atol=1e-9)


def test_rerun_of_a_finished_run_recomputes_nothing(photos, full_run):
    before = read_colmap_model(full_run / "sparse" / "0")
    first = json.loads((full_run / "run.json").read_text())["counts"]
    assert first["units"]["computed"] > 0
    assert (first["alignment"]["computed"], first["alignment"]["cached"]) == (1, 0)
    assert _invoke("reconstruct", photos, full_run, "--quiet").exit_code == 0
    counts = json.loads((full_run / "run.json").read_text())["counts"]
    assert counts["units"] == {"computed": 0, "reused": first["units"]["computed"] + first["units"]["reused"]}
    for stage in ("features", "self_calibration", "matching", "alignment"):
        assert counts[stage]["computed"] == 0 and counts[stage]["cached"] == counts[stage]["total"] > 0, stage
    assert counts["alignment"]["key"] == first["alignment"]["key"]
    log = (full_run / "log.txt").read_text()
    assert "cache units: 0 computed" in log and "preview: preview.png is of this model already" in log
    after = read_colmap_model(full_run / "sparse" / "0")
    np.testing.assert_array_equal(after.rotations, before.rotations)
    np.testing.assert_array_equal(after.points_xyz, before.points_xyz)


# Runs the CLI's command in a fresh interpreter, then says which heavy modules the run imported (the click
# group, not the console script's main(), which would end the process before the report).
_RERUN_DRIVER = """
import json, sys
from sfm3r.cli.main import cli
sys.argv = ["sfm3r", *sys.argv[1:]]
try:
    cli()
except SystemExit as exit:
    code = exit.code
# ~1.5 s, ~0.2, 0.15 s; pycolmap and networkx ~0.1 s each
heavy = ("torch", "roma", "faiss", "asmk", "matplotlib", "scipy.optimize", "scipy.sparse", "pycolmap", "networkx")
print(json.dumps({"exit": code, "loaded": [name for name in heavy if name in sys.modules]}))
"""


def test_rerun_of_a_finished_run_imports_no_torch_scipy_or_pycolmap_and_computes_nothing(photos, full_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    args = ["reconstruct", str(photos), str(out), "--quiet"]
    build = installed_torch_build()
    if build is None or build.has_gpu_backend:  # --device auto then asks torch whether a GPU is there
        args += ["--device", "cpu"]
    kept = sorted((out / "images").iterdir()) + sorted((out / "sparse" / "0").iterdir()) + [out / "preview.png"]
    mtimes = {path.name: path.stat().st_mtime_ns for path in kept}  # copytree kept the first run's
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(sfm3r.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _RERUN_DRIVER, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"exit": 0, "loaded": []}, done.stderr
    counts = json.loads((out / "run.json").read_text())["counts"]
    assert counts["units"]["computed"] == 0 and counts["units"]["reused"] > 0
    assert counts["alignment"] == json.loads((full_run / "run.json").read_text())["counts"]["alignment"] | {"computed": 0, "cached": 1}
    log = (out / "log.txt").read_text()
    assert "cache units: 0 computed" in log  # the first run's line says N computed
    # The export kept the cropped images and the model files it wrote (not rebuilt), and the preview: same
    # files, same mtimes.
    assert f"{len(NAMES)} kept as an earlier export wrote them" in log
    assert "sparse/0 kept as an earlier export wrote it" in log
    assert {path.name: path.stat().st_mtime_ns for path in kept} == mtimes
    manifest = json.loads((out / "sfm3r-manifest.json").read_text())
    model_files = [f"sparse/0/{stem}.bin" for stem in ("cameras", "images", "points3D", "rigs", "frames")]
    assert sorted(manifest["made_from"]) == sorted([f"images/{name}" for name in NAMES] + model_files)
    for key, record in manifest["made_from"].items():
        assert key in manifest["files"] and record["size"] == (out / key).stat().st_size


def test_rerun_with_downscales_adds_the_copies_and_a_later_rerun_keeps_or_removes_them(full_run, photos, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    assert _invoke("reconstruct", photos, out, "--quiet", "--downscales", "2", "4").exit_code == 0
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    listed = set(json.loads((out / "sfm3r-manifest.json").read_text())["files"])
    for factor in (2, 4):
        for image in rec.images.values():
            camera = rec.cameras[image.camera_id]
            with Image.open(out / f"images_{factor}" / image.name) as copy:  # the cropped images, downscaled
                assert copy.size == (camera.width // factor, camera.height // factor)
            assert f"images_{factor}/{image.name}" in listed
    assert json.loads((out / "run.json").read_text())["config"]["downscales"] == [2, 4]
    frames = json.loads((out / "transforms.json").read_text())["frames"]
    assert sorted(f["file_path"] for f in frames) == sorted(f"images/{i.name}" for i in rec.images.values())
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "images_2").iterdir()}
    assert _invoke("reconstruct", photos, out, "--quiet", "--downscales", "2").exit_code == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images_2").iterdir()} == stamps  # not re-encoded
    assert not (out / "images_4").exists()
    assert "downscaled copies (images_2/): 0 written, 5 unchanged" in (out / "log.txt").read_text()


def test_info_summarises_the_model(full_run):
    result = _invoke("info", full_run)
    assert result.exit_code == 0
    assert "5 of 5" in result.output and "registered images" in result.output


@pytest.mark.slow
def test_lens_model_run_writes_undistorted_3dgs_folder_and_keeps_the_distorted_model(full_run, photos, tmp_path):
    """--camera-model SIMPLE_RADIAL: distortion estimated; sparse/0 + images/ undistorted PINHOLE for the
    trainers, distorted/sparse/0 the SIMPLE_RADIAL model of the photos (graphdeco convert.py's layout)."""
    out = tmp_path / "out"
    shutil.copytree(full_run / "cache", out / "cache")  # features and matches from the default run
    shutil.copy(full_run / "sfm3r-manifest.json", out)  # with the run folder's manifest, which owns the cache
    result = _invoke("reconstruct", photos, out, "--quiet", "--camera-model", "SIMPLE_RADIAL")
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["counts"]["lens"]["chosen"].upper() == "SIMPLE_RADIAL"
    distorted = pycolmap.Reconstruction(str(out / "distorted" / "sparse" / "0"))
    assert {c.model.name for c in distorted.cameras.values()} == {"SIMPLE_RADIAL"}
    assert all(c.params[3] != 0 for c in distorted.cameras.values())
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert rec.num_reg_images() == len(NAMES) and run["counts"]["scene"]["points"] == rec.num_points3D()
    for image in rec.images.values():
        camera = rec.cameras[image.camera_id]
        assert camera.model.name == "PINHOLE"
        with Image.open(out / "images" / image.name) as photo:
            assert photo.size == (camera.width, camera.height)
    # the default run afterwards removes the distorted model again: the folder stays consistent
    assert _invoke("reconstruct", photos, out, "--quiet").exit_code == 0
    assert not (out / "distorted").exists()


@pytest.mark.slow
def test_align_into_a_reconstruct_folder_leaves_it_consistent(full_run, photos, tmp_path):
    """`sfm3r align` writes the model of the uncropped photos: the cropped images/ of the earlier export
    must not stay beside it (graphdeco would read size mismatches)."""
    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    assert _invoke("reconstruct", photos, out, "--quiet", "--downscales", "2").exit_code == 0
    assert (out / "images").is_dir() and (out / "images_2").is_dir() and (out / "transforms.json").is_file()
    result = _invoke("align", photos, out, "--quiet")
    assert result.exit_code == 0, result.output
    # the downscaled copies and nerfstudio's files describe the export's images: gone with them
    for stale in ("images_2", "transforms.json", "sparse_pc.ply"):
        assert not (out / stale).exists(), stale
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    images_dir = out / "images"
    for image in rec.images.values():
        camera = rec.cameras[image.camera_id]
        if images_dir.is_dir():
            with Image.open(images_dir / image.name) as photo:
                assert photo.size == (camera.width, camera.height)
