"""Safety: files from users never run code, and exported names never leave the output folder.

- Checkpoints: torch.load(weights_only=True) or safetensors; a pickle that would run code is refused
  (a random, truncated or foreign file is a one-line CheckpointError too).
- The ASMK codebook pickle: an unpickler that rebuilds plain containers and numpy arrays only.
- The cache: HDF5 and JSON only; a pickle dropped in place of a shard is moved aside, never unpickled.
- Exported names: flat, inside OUT/images; '..' parts are refused (also by `sfm3r export`).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_helpers import FAST, assert_success, assert_user_error, invoke, photo_folder, run_json

from sfm3r.errors import CheckpointError
from sfm3r.types import Camera, Scene


class _RunsCode:
    """Unpickling this object runs `touch MARKER` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def photos(tmp_path) -> Path:
    return photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])


def _bad_checkpoints(folder: Path, marker: Path) -> dict[str, tuple[Path, list[str]]]:
    """{case: (file, words of the expected one-line error)}."""
    folder.mkdir()
    files = {}
    evil = folder / "evil.pth"
    torch.save({"model": _RunsCode(marker), "args": {"model": "AsymmetricMASt3R()"}}, evil)
    files["runs-code"] = (evil, ["refusing to load", "arbitrary code"])
    (folder / "random.pth").write_bytes(np.random.default_rng(0).bytes(20000))
    files["random-bytes"] = (folder / "random.pth", ["random.pth"])
    torch.save({"model": {"w": torch.zeros(2000, 100)}, "args": {"model": "AsymmetricMASt3R()"}}, folder / "good.pth")
    data = (folder / "good.pth").read_bytes()
    (folder / "truncated.pth").write_bytes(data[: len(data) // 2])
    files["truncated"] = (folder / "truncated.pth", ["truncated", "download it again"])
    (folder / "random.safetensors").write_bytes(np.random.default_rng(1).bytes(5000))
    files["random-safetensors"] = (folder / "random.safetensors", ["safetensors", "download it again"])
    return files


def test_bad_checkpoints_are_one_line_errors_and_run_no_code(tmp_path, photos):
    marker = tmp_path / "PWNED"
    for case, (path, words) in _bad_checkpoints(tmp_path / "checkpoints", marker).items():
        result = invoke("match", photos, tmp_path / f"out-{case}", "-q", "--device", "cpu", "--checkpoint", path)
        assert_user_error(result, "checkpoint", *words)
    assert not marker.exists(), "unpickling a checkpoint ran code"


def test_codebook_pickle_runs_no_code(tmp_path):
    from sfm3r.sfm.mast3r.retrieval import read_codebook

    marker = tmp_path / "PWNED"
    path = tmp_path / "evil_codebook.pkl"
    path.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(CheckpointError, match="not allowed|refus"):
        read_codebook(path)
    assert not marker.exists()


def test_pickle_in_place_of_a_cache_shard_is_never_unpickled(tmp_path, photos):
    out = tmp_path / "out"
    assert_success(invoke("match", photos, out, *FAST))
    (shard,) = (out / "cache").glob("features-sift-*/shards/*.h5")
    marker = tmp_path / "PWNED"
    shard.write_bytes(pickle.dumps(_RunsCode(marker)))
    assert_success(invoke("match", photos, out, *FAST))
    assert run_json(out)["counts"]["features"]["computed"] == 2
    assert not marker.exists()
    assert list((out / "cache").glob("features-sift-*/corrupt/*.h5"))


def test_export_command_refuses_a_model_name_that_climbs_out(tmp_path, photos):
    """`sfm3r export` of a foreign COLMAP model whose image name would escape OUT/images."""
    from sfm3r.io.colmap import write_colmap_model

    crafted = "x\\..\\..\\escaped.jpg"  # a legal Linux file name; backslashes count as separators on export
    os.rename(photos / "0004.jpg", photos / crafted)
    scene = Scene(
        image_names=("0003.jpg", crafted),
        cameras=(Camera(384, 256, 300.0, 300.0, 192.0, 128.0),),
        camera_of_image=np.zeros(2, np.int64),
        rotations=np.stack([np.eye(3)] * 2),
        translations=np.array([[0.0, 0, 0], [-1.0, 0, 0]]),
        points_xyz=np.array([[0.0, 0, 5]]),
        points_rgb=np.zeros((1, 3), np.uint8),
        points_error=np.zeros(1),
        obs_point=np.zeros(2, np.int64),
        obs_image=np.arange(2),
        obs_xy=np.array([[192.0, 128], [132.0, 128]]),
    )  # fmt: skip
    model = tmp_path / "model"
    model.mkdir()
    write_colmap_model(scene, model)
    out = tmp_path / "deep" / "out"
    assert_user_error(invoke("export", model, photos, out), "'..'", "refusing to export")
    assert not list(tmp_path.rglob("escaped.jpg"))
    assert not out.exists() or not any(out.rglob("*.jpg"))
