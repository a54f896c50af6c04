"""`export_model` into a folder holding an earlier export: what is kept, redone, removed (never a user's file)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sfm3r.errors import InputError
from sfm3r.io.colmap import write_colmap_model
from sfm3r.pipelines.export import export_model, remove_stale_export_files
from sfm3r.pipelines.output_manifest import MANIFEST_NAME, open_output
from sfm3r.types import Camera, Scene

CAMERA = Camera(width=80, height=60, fx=70.0, fy=70.0, cx=40.0, cy=30.0)


def _scene(names: tuple[str, ...]) -> Scene:
    """Cameras on a line looking down +z at points in front of them, exact observations."""
    rng = np.random.default_rng(0)
    points = rng.uniform([-1, -1, 4], [1, 1, 6], size=(40, 3))
    n = len(names)
    translations = np.array([[-0.3 * i, 0.0, 0.0] for i in range(n)])
    obs = []
    for i in range(n):
        cam = points + translations[i]
        xy = cam[:, :2] / cam[:, 2:] * CAMERA.fx + [CAMERA.cx, CAMERA.cy]
        obs += [(p, i, *xy[p]) for p in range(len(points)) if 0 < xy[p, 0] < 80 and 0 < xy[p, 1] < 60]
    obs = np.array(obs)
    return Scene(
        image_names=names, cameras=(CAMERA,), camera_of_image=np.zeros(n, dtype=np.int64),
        rotations=np.repeat(np.eye(3)[None], n, axis=0), translations=translations,
        points_xyz=points, points_rgb=rng.integers(0, 256, (len(points), 3), dtype=np.uint8),
        points_error=np.full(len(points), 0.5), obs_point=obs[:, 0].astype(np.int64),
        obs_image=obs[:, 1].astype(np.int64), obs_xy=obs[:, 2:],
    )  # fmt: skip


@pytest.fixture
def model_and_photos(tmp_path):
    names = ("a.jpg", "b.jpg", "c.png")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(photos / name)
    write_colmap_model(_scene(names), tmp_path / "model")
    return tmp_path / "model", photos


def _listed(out) -> set[str]:
    return set(json.loads((out / MANIFEST_NAME).read_text())["files"])


def test_export_claims_every_file_it_writes(model_and_photos, tmp_path):
    model, photos = model_and_photos
    out = export_model(model, photos, tmp_path / "out", downscales=(2, 4))
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {MANIFEST_NAME}
    assert written <= _listed(out)  # (the listing also names the .txt model files, written with --text)
    assert {"transforms.json", "sparse_pc.ply", "images_2/a.jpg", "images_4/c.png"} <= written


def test_rerun_keeps_current_copies_and_removes_factors_no_longer_asked_for(model_and_photos, tmp_path):
    model, photos = model_and_photos
    out = export_model(model, photos, tmp_path / "out", downscales=(2, 4))
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "images_2").iterdir()}
    (out / "images_4" / "notes.txt").write_text("the user's")  # not sfm3r's: stays
    export_model(model, photos, out, downscales=(2,))
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images_2").iterdir()} == stamps  # not re-encoded
    assert sorted(p.name for p in (out / "images_4").iterdir()) == ["notes.txt"]
    assert not any(rel.startswith("images_4/") for rel in _listed(out))
    export_model(model, photos, out)  # no --downscales: no copies left (nerfstudio would pick images_2 up)
    assert not (out / "images_2").exists()


def test_a_model_with_fewer_images_leaves_no_stale_file(model_and_photos, tmp_path):
    """gsplat pairs images/ and images_<f>/ by sorted file name: a stale file would shift the pairing."""
    model, photos = model_and_photos
    out = export_model(model, photos, tmp_path / "out", downscales=(2,))
    write_colmap_model(_scene(("a.jpg", "c.png")), tmp_path / "smaller")
    export_model(tmp_path / "smaller", photos, out, downscales=(2,))
    for folder in ("images", "images_2"):
        assert sorted(p.name for p in (out / folder).iterdir()) == ["a.jpg", "c.png"]
    frames = json.loads((out / "transforms.json").read_text())["frames"]
    assert [f["file_path"] for f in frames] == ["images/a.jpg", "images/c.png"]


def test_without_an_export_every_exported_image_and_nerfstudio_file_goes(model_and_photos, tmp_path):
    """What `sfm3r align` calls: its sparse/0 describes the photos, not the exported images."""
    model, photos = model_and_photos
    out = export_model(model, photos, tmp_path / "out", downscales=(2,))
    manifest = open_output(out)
    assert remove_stale_export_files(manifest) == 3 + 3 + 2
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, "points.ply", "sparse"])


def test_a_users_transforms_json_is_refused_untouched(model_and_photos, tmp_path):
    model, photos = model_and_photos
    out = export_model(model, photos, tmp_path / "out", downscales=(2,))
    manifest = open_output(out)
    manifest.delete_owned_files(["transforms.json"])  # as if the user had written it
    (out / "transforms.json").write_text("mine")
    with pytest.raises(InputError, match="transforms.json exists and was not written by sfm3r"):
        export_model(model, photos, out, downscales=(2,))
    assert (out / "transforms.json").read_text() == "mine"
