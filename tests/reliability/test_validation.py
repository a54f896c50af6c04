"""Validation first: a bad option or input file is one line before any image is read or OUT is touched."""

from __future__ import annotations

import logging
from pathlib import Path

import pycolmap
import pytest
import torch
from PIL import Image
from reliability_helpers import FAST, assert_success, assert_user_error, invoke, photo_folder, sample_photo

from sfm3r.io.images import load_image_infos


@pytest.fixture
def photos(tmp_path) -> Path:
    return photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg", "0005.jpg"])


def _cameras_txt(path: Path, params: str, size: str = "384 256") -> Path:
    path.write_text(f"# one camera\n1 PINHOLE {size} {params}\n")
    return path


def _cameras_bin(folder: Path, params: list[float]) -> Path:
    rec = pycolmap.Reconstruction()
    camera = pycolmap.Camera(model="PINHOLE", width=384, height=256, params=params)
    camera.camera_id = 1
    rec.add_camera(camera)
    folder.mkdir()
    rec.write_binary(str(folder))
    return folder / "cameras.bin"


def test_unknown_device_is_refused_before_any_work(tmp_path, photos):
    out = tmp_path / "out"
    for device in ("gpu", "cuda:x", "CPU0"):
        assert_user_error(invoke("reconstruct", photos, out, *FAST, "--device", device), "unknown device", device)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_is_refused(tmp_path, photos):
    assert_user_error(invoke("pairs", photos, tmp_path / "out", *FAST, "--device", "cuda:1"), "not available")


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ("nan 300 192 128", ["focal", "nan", "cameras.txt:2"]),
        ("300 inf 192 128", ["focal", "inf"]),
        ("-300 300 192 128", ["positive", "-300"]),
        ("300 300 1920 128", ["principal point", "1920", "inside"]),
        ("300 300 192 nan", ["principal point", "nan"]),
    ],
)
def test_absurd_known_intrinsics_are_refused_naming_file_and_value(tmp_path, photos, params, words):
    cameras = _cameras_txt(tmp_path / "cameras.txt", params)
    out = tmp_path / "out"
    assert_user_error(invoke("reconstruct", photos, out, *FAST, "--known-intrinsics", cameras), *words)
    assert not out.exists()


def test_binary_cameras_bin_is_accepted_and_checked(tmp_path, photos):
    good = _cameras_bin(tmp_path / "good", [300.0, 300.0, 192.0, 128.0])
    assert_success(invoke("match", photos, tmp_path / "out", *FAST, "--known-intrinsics", good))
    bad = _cameras_bin(tmp_path / "bad", [float("nan"), 300.0, 192.0, 128.0])
    assert_user_error(invoke("match", photos, tmp_path / "out2", *FAST, "--known-intrinsics", bad), "cameras.bin", "nan")
    (tmp_path / "garbage.bin").write_bytes(b"\x00\x01\x02garbage")
    assert_user_error(
        invoke("match", photos, tmp_path / "out3", *FAST, "--known-intrinsics", tmp_path / "garbage.bin"),
        "garbage.bin",
    )


def test_malformed_pairs_file_and_scene_graph_fail_before_any_work(tmp_path, photos):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("0003.jpg 0004.jpg\n0003.jpg\n")
    out = tmp_path / "out"
    assert_user_error(invoke("pairs", photos, out, *FAST, "--pairs-file", pairs), "pairs.txt:2", "two image names")
    assert_user_error(invoke("pairs", photos, out, *FAST, "--scene-graph", "swin-x"), "unknown scene graph")
    assert not out.exists()


def test_checkpoint_of_another_network_is_refused_before_any_work(tmp_path, photos):
    checkpoint = tmp_path / "other.pth"
    torch.save({"model": {"w": torch.zeros(3)}, "args": {"model": "AsymmetricMASt3R(enc_depth=2, dec_depth=2)"}},
               checkpoint)  # fmt: skip
    out = tmp_path / "out"
    line = assert_user_error(invoke("reconstruct", photos, out, *FAST, "--checkpoint", checkpoint), "other.pth")
    assert "missing" in line or "unsupported" in line or "does not fit" in line, line
    assert not out.exists()


def test_absurd_exif_focal_is_ignored_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 65535  # FocalLengthIn35mmFilm: a placeholder, not a lens
    sample_photo("0003.jpg").save(folder / "absurd.jpg", exif=exif)
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 28
    sample_photo("0004.jpg").save(folder / "normal.jpg", exif=exif)
    with caplog.at_level(logging.WARNING, logger="sfm3r.io.images"):
        absurd, normal = load_image_infos(folder)
    assert absurd.prior_focal_px is None and normal.prior_focal_px == pytest.approx(28 / 36 * 384)
    assert "absurd.jpg" in caplog.text and "7-1800 mm" in caplog.text and "normal.jpg" not in caplog.text


def test_text_model_refuses_names_with_spaces_before_matching(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    (photos / "0003.jpg").rename(photos / "IMG 0003.jpg")
    assert_user_error(invoke("align", photos, tmp_path / "out", *FAST, "--text"), "IMG 0003.jpg", "--text")
    assert not list((tmp_path / "out" / "cache").glob("pairs-*"))


def test_undecodable_photo_formats_are_listed_in_one_warning(tmp_path, caplog):
    folder = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    (folder / "IMG_1.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    (folder / "IMG_2.avif").write_bytes(b"\0\0\0\x18ftypavif")
    with caplog.at_level(logging.WARNING, logger="sfm3r.io.images"):
        infos = load_image_infos(folder)
    assert [i.name for i in infos] == ["0003.jpg", "0004.jpg"]
    warnings = [r.getMessage() for r in caplog.records if "cannot be decoded" in r.getMessage()]
    assert len(warnings) == 1 and "IMG_1.HEIC" in warnings[0] and "IMG_2.avif" in warnings[0]


def test_evaluate_against_ground_truth_without_shared_names_is_an_error(tmp_path):
    from sfm3r.io.colmap import read_colmap_model, write_colmap_model

    gt = read_colmap_model(Path(__file__).resolve().parents[2] / "sample" / "gt")
    import dataclasses

    renamed = dataclasses.replace(gt, image_names=tuple(f"other_{n}" for n in gt.image_names))
    write_colmap_model(renamed, tmp_path / "est")
    assert_user_error(invoke("evaluate", tmp_path / "est", Path(__file__).resolve().parents[2] / "sample" / "gt"),
                      "share no image name")  # fmt: skip
