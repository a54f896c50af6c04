"""The bad-input matrix: what users really feed the tool, at the command line.

Every case is built on the fly in tmp_path. A case either stops with exit code 2 and one "Error:" line
that names the problem and the fix (nothing useful can be produced), or warns, skips and still produces
a useful result. Nothing ends in a traceback. docs/robustness.md lists the same matrix.

Most cases stop or finish within a second or two (tiny images, the `pairs` stage, which only reads the
images and extracts features); three run a whole reconstruction of a few 384x256 photos.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from PIL import Image
from reliability_helpers import (
    FAST,
    SAMPLE,
    SAMPLE_NAMES,
    assert_success,
    assert_user_error,
    invoke,
    photo_folder,
    run_json,
    sample_photo,
)

from conftest import DATA

# --------------------------------------------------------------------------------------------------
# The input folder


def test_input_folder_that_does_not_exist(tmp_path):
    assert_user_error(invoke("reconstruct", tmp_path / "nope", tmp_path / "out"), "does not exist")


def test_input_path_that_is_a_file(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"x")
    assert_user_error(invoke("reconstruct", tmp_path / "photo.jpg", tmp_path / "out"), "is a file")


def test_empty_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    assert_user_error(invoke("reconstruct", tmp_path / "photos", tmp_path / "out", "-q"), "no images", ".jpg")


def test_folder_with_only_non_images(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "notes.txt").write_text("holiday")
    (photos / ".DS_Store").write_bytes(b"\0" * 64)
    (photos / "raw").mkdir()
    (photos / "raw" / "IMG_0001.jpg").write_bytes(b"not searched without --recursive")
    assert_user_error(invoke("pairs", photos, tmp_path / "out", "-q"), "no images", "subfolders")


def test_non_image_files_mixed_in_are_ignored(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    (photos / "notes.txt").write_text("holiday")
    (photos / "video.mp4").write_bytes(b"\0" * 100)
    (photos / "._0003.jpg").write_bytes(b"\0\5\26\7 macOS resource fork")  # hidden: skipped
    (photos / "Thumbs.db").write_bytes(b"\0" * 100)
    out = tmp_path / "out"
    assert_success(invoke("pairs", photos, out, *FAST))
    assert [i["name"] for i in run_json(out)["images"]] == ["0003.jpg", "0004.jpg"]


def test_single_image(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg"])
    assert_user_error(invoke("reconstruct", photos, tmp_path / "out", *FAST), "1 usable image", "at least two")


# --------------------------------------------------------------------------------------------------
# Broken files


def _broken_folder(tmp_path: Path, name: str, data: bytes) -> Path:
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    (photos / name).write_bytes(data)
    return photos


def _truncated_jpeg() -> bytes:
    data = (SAMPLE / "images" / "0005.jpg").read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("case", "data", "words"),
    [
        ("zero-byte", b"", ["empty (0 bytes)"]),
        ("truncated", None, ["truncated"]),
        ("text-named-jpg", b"this is not a photo\n", ["cannot decode"]),
    ],
)
def test_broken_image_stops_with_the_file_and_the_fix(tmp_path, case, data, words):
    photos = _broken_folder(tmp_path, "broken.jpg", _truncated_jpeg() if data is None else data)
    line = assert_user_error(invoke("pairs", photos, tmp_path / "out", *FAST), "broken.jpg", *words)
    assert "--skip-bad-images" in line


def test_skip_bad_images_warns_and_goes_on(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "half.jpg").write_bytes(_truncated_jpeg())
    out = tmp_path / "out"
    assert_success(invoke("pairs", photos, out, *FAST, "--skip-bad-images"))
    assert [i["name"] for i in run_json(out)["images"]] == ["0003.jpg", "0004.jpg"]
    log = (out / "log.txt").read_text()
    assert "skipping empty.jpg" in log and "skipping half.jpg" in log


def test_every_image_broken_with_skip_bad_images(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"")
    (photos / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert_user_error(invoke("pairs", photos, tmp_path / "out", "-q", "--skip-bad-images"), "could be decoded")


# --------------------------------------------------------------------------------------------------
# Formats, colour modes, orientation, sizes


def _exif_with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_colour_modes_wrong_extension_and_rotated_portrait_reconstruct(tmp_path):
    """Grey, RGBA, palette, CMYK, 16-bit and a PNG named .jpg reconstruct; their exported files are RGB."""
    photos = tmp_path / "photos"
    photos.mkdir()
    a, b, c, d, e, f = (sample_photo(name) for name in SAMPLE_NAMES)
    a.convert("L").save(photos / "grey.jpg")
    rgba = b.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(b.size))
    rgba.save(photos / "alpha.png")
    c.quantize(256).save(photos / "palette.png")
    d.convert("CMYK").save(photos / "cmyk.jpg")
    grey16 = (np.asarray(e.convert("L"), np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(photos / "deep.png")  # mode I;16
    # A phone portrait: the sensor stores landscape pixels, EXIF orientation 6 says "rotate 90° clockwise".
    f.transpose(Image.Transpose.ROTATE_90).save(photos / "portrait.jpg", exif=_exif_with_orientation(6), quality=95)
    shutil.move(photos / "alpha.png", photos / "alpha_really_png.jpg")  # a PNG with a JPEG extension
    with Image.open(photos / "deep.png") as check:
        assert check.mode.startswith("I;16") or check.mode == "I"
    with Image.open(photos / "cmyk.jpg") as check:
        assert check.mode == "CMYK"

    out = tmp_path / "out"
    assert_success(invoke("reconstruct", photos, out, *FAST))
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert rec.num_reg_images() >= 5
    for image in rec.images.values():
        camera = rec.cameras[image.camera_id]
        with Image.open(out / "images" / image.name) as exported:
            assert exported.mode == "RGB" and exported.size == (camera.width, camera.height), image.name
        if image.name.startswith("portrait"):
            # The camera sees the photo as displayed: the 384x256 landscape rotated back to 256x384.
            assert (camera.width, camera.height) == (384, 256)
    names = {image.name for image in rec.images.values()}
    assert names <= {"grey.png", "alpha_really_png.png", "palette.png", "cmyk.png", "deep.png", "portrait.png"}


def test_all_eight_exif_orientations(tmp_path):
    """Sizes are those of the image as displayed: orientations 5-8 swap width and height."""
    photos = tmp_path / "photos"
    photos.mkdir()
    stored = sample_photo("0004.jpg", (96, 64))
    for orientation in range(1, 9):
        stored.save(photos / f"o{orientation}.jpg", exif=_exif_with_orientation(orientation), quality=95)
    out = tmp_path / "out"
    assert_success(invoke("pairs", photos, out, *FAST))
    sizes = {i["name"]: (i["width"], i["height"]) for i in run_json(out)["images"]}
    assert sizes == {f"o{k}.jpg": (96, 64) if k <= 4 else (64, 96) for k in range(1, 9)}


def test_very_large_image(tmp_path):
    """An 8000x6000 photo is read at full size (its camera) but matched at --max-image-size."""
    photos = photo_folder(tmp_path / "photos", ["0003.jpg"])
    sample_photo("0004.jpg").resize((8000, 6000), Image.Resampling.BILINEAR).save(photos / "big.jpg", quality=80)
    out = tmp_path / "out"
    assert_success(invoke("match", photos, out, *FAST))  # `pairs` of a complete graph extracts no features
    sizes = {i["name"]: (i["width"], i["height"]) for i in run_json(out)["images"]}
    assert sizes["big.jpg"] == (8000, 6000)
    assert run_json(out)["counts"]["features"]["computed"] == 2


def test_tiny_images_only(tmp_path):
    """32x32 thumbnails hold no usable features: a clear "cannot be reconstructed" error."""
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg", "0005.jpg"], size=(32, 32))
    line = assert_user_error(invoke("reconstruct", photos, tmp_path / "out", *FAST), "no two images")
    assert "overlapping" in line


# --------------------------------------------------------------------------------------------------
# Duplicates, few images, two scenes


def test_identical_duplicates_are_skipped_with_a_warning(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    shutil.copy(photos / "0003.jpg", photos / "0003 (copy).jpg")
    out = tmp_path / "out"
    assert_success(invoke("pairs", photos, out, *FAST))
    names = [i["name"] for i in run_json(out)["images"]]
    assert len(names) == 2 and "0004.jpg" in names
    kept = names[0] if names[1] == "0004.jpg" else names[1]
    dropped = ({"0003.jpg", "0003 (copy).jpg"} - {kept}).pop()
    assert f"skipping {dropped}: identical to {kept}" in (out / "log.txt").read_text()
    assert "pairs.txt not written" in (out / "log.txt").read_text()  # the format cannot hold spaces


def test_one_image_and_its_duplicate(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg"])
    shutil.copy(photos / "0003.jpg", photos / "IMG_0003.jpg")
    assert_user_error(invoke("reconstruct", photos, tmp_path / "out", *FAST), "1 usable image")


def test_two_images_with_spaces_unicode_and_backslashes_in_names(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    sample_photo("0004.jpg").save(photos / "fontaine é 1.jpg", quality=95)
    sample_photo("0005.jpg").save(photos / "day 2\\噴水.jpg", quality=95)  # a backslash in a Linux name
    out = tmp_path / "out"
    assert_success(invoke("reconstruct", photos, out, *FAST))
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert rec.num_reg_images() == 2 and rec.num_points3D() > 50
    assert sorted(p.name for p in (out / "images").iterdir()) == ["day 2__噴水.jpg", "fontaine é 1.jpg"]


@pytest.mark.skipif(not (DATA / "middlebury_templeRing").is_dir(), reason="shared data not available")
def test_two_unrelated_scenes_keep_the_larger_and_report_the_rest(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg", "0005.jpg"])
    temple = sorted((DATA / "middlebury_templeRing" / "images").iterdir())[:2]
    for path in temple:
        shutil.copy(path, photos / f"temple_{path.name}")
    out = tmp_path / "out"
    result = invoke("reconstruct", photos, out, *FAST)
    assert_success(result)
    assert "Not registered: temple_" in result.output
    counts = run_json(out)["counts"]["scene"]
    assert counts["registered"] == 3
    assert sorted(counts["unregistered"]) == sorted(f"temple_{p.name}" for p in temple)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["0003.jpg", "0004.jpg", "0005.jpg"]


# --------------------------------------------------------------------------------------------------
# The output folder


def test_output_path_is_a_file(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    (tmp_path / "out").write_text("")
    assert_user_error(invoke("reconstruct", photos, tmp_path / "out", "-q"), "is a file", "give a folder")


def test_output_path_below_a_file(tmp_path):
    """Unwritable even for root: a folder cannot be created inside a regular file."""
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    (tmp_path / "file").write_text("")
    assert_user_error(invoke("reconstruct", photos, tmp_path / "file" / "out", "-q"), "cannot write", "another folder")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux)")
def test_output_path_in_a_read_only_file_system(tmp_path):
    """/proc refuses new entries even to root (the only unwritable place a root test can count on)."""
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    assert_user_error(invoke("reconstruct", photos, "/proc/sfm3r-out", "-q"), "cannot write", "/proc/sfm3r-out")


def test_images_inside_the_output_folder_are_never_deleted(tmp_path):
    """The 3DGS layout `project/images` + OUT=`project`: OUT/images is sfm3r's (--overwrite deletes it)."""
    project = tmp_path / "project"
    photos = photo_folder(project / "images", ["0003.jpg", "0004.jpg"])
    for extra in ([], ["--overwrite"]):
        line = assert_user_error(invoke("reconstruct", photos, project, *FAST, *extra), "inside", "outside")
        assert str(project / "images") in line
    assert sorted(p.name for p in photos.iterdir()) == ["0003.jpg", "0004.jpg"]


def test_output_folder_equal_to_the_image_folder(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    assert_user_error(invoke("reconstruct", photos, photos, *FAST), "is the image folder", "outside")


def test_output_folder_inside_the_image_folder(tmp_path):
    """Allowed unless --recursive, which would read the exported copies as more photos next time."""
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    assert_user_error(invoke("pairs", photos, photos / "out", *FAST, "--recursive"), "--recursive", "outside")
    assert_success(invoke("pairs", photos, photos / "out", *FAST))


def test_disk_full_while_writing_is_one_line_and_resumable(tmp_path, monkeypatch):
    """ENOSPC cannot be provoked safely as root, so the PLY writer is made to hit it."""
    import errno

    import sfm3r.pipelines.reconstruct as reconstruct_module

    def disk_full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    photos = photo_folder(tmp_path / "photos", ["0004.jpg", "0005.jpg"])
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(reconstruct_module, "write_ply", disk_full)
        result = invoke("align", photos, out, *FAST)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert "No space left on device" in line and "points.ply" in line and "rerun the same command" in line
    assert_success(invoke("align", photos, out, *FAST))
    assert run_json(out)["counts"]["matching"]["cached"] == 1


def test_evaluate_json_path_that_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("")
    gt = SAMPLE / "gt"
    assert_user_error(invoke("evaluate", gt, gt, "--json", tmp_path / "file" / "m.json"), "cannot write", "m.json")


def test_cache_path_that_is_a_file(tmp_path):
    """In a run folder (an unrelated folder is refused before: see test_written_files.py)."""
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    assert_success(invoke("match", photos, tmp_path / "out", *FAST))
    shutil.rmtree(tmp_path / "out" / "cache")
    (tmp_path / "out" / "cache").write_text("")
    assert_user_error(invoke("match", photos, tmp_path / "out", *FAST), "is a file", "cache")


# --------------------------------------------------------------------------------------------------
# Options that point to bad files


def test_pairs_file_naming_an_unknown_image(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    (tmp_path / "pairs.txt").write_text("0003.jpg 0099.jpg\n")
    assert_user_error(invoke("pairs", photos, tmp_path / "out", *FAST, "--pairs-file", tmp_path / "pairs.txt"), "0099.jpg")


def test_known_intrinsics_that_are_not_cameras(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    (tmp_path / "cameras.txt").write_text("1 PINHOLE 384\n")
    assert_user_error(
        invoke("match", photos, tmp_path / "out", *FAST, "--known-intrinsics", tmp_path / "cameras.txt"), "cameras.txt"
    )


def test_unknown_scene_graph(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    assert_user_error(invoke("pairs", photos, tmp_path / "out", *FAST, "--scene-graph", "bogus-3"), "bogus-3")


def test_cuda_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    assert_user_error(invoke("pairs", photos, tmp_path / "out", *FAST, "--device", "cuda"), "--device cpu")


def test_crafted_file_name_cannot_escape_the_output_folder(tmp_path):
    """A Linux file name may hold backslashes; exported names flatten them, '..' parts are refused early."""
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    shutil.move(photos / "0004.jpg", photos / "x\\..\\..\\escaped.jpg")
    out = tmp_path / "deep" / "out"
    line = assert_user_error(invoke("reconstruct", photos, out, *FAST), "escaped.jpg", "rename")
    assert "'..'" in line
    assert not list(tmp_path.rglob("escaped.jpg"))
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["out"]
    assert not (out / "sparse").exists()  # refused before any work


def test_file_name_that_is_not_utf8(tmp_path):
    """A Latin-1 name from an old zip ("caf\\xe9.jpg"): refused before any work, with the fix."""
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    os.rename(photos / "0004.jpg", os.path.join(bytes(photos), b"caf\xe9.jpg"))
    line = assert_user_error(invoke("reconstruct", photos, tmp_path / "out", *FAST), "not valid utf-8", "rename")
    assert "caf\\udce9.jpg" in line
    assert not (tmp_path / "out" / "cache").exists()


# --------------------------------------------------------------------------------------------------
# The cache


def _pairs_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run up to the match stage: the first that needs the SIFT cache (pairs of a complete graph has none)."""
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    out = tmp_path / "out"
    assert_success(invoke("match", photos, out, *FAST))
    return photos, out


def test_cache_of_another_schema_version(tmp_path):
    photos, out = _pairs_run(tmp_path)
    (manifest,) = (out / "cache").glob("features-sift-*/manifest.json")
    content = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(content | {"schema_version": 99}))
    assert_user_error(invoke("match", photos, out, *FAST), "schema version 99", "--overwrite")
    assert_success(invoke("match", photos, out, *FAST, "--overwrite"))
    assert run_json(out)["counts"]["features"]["computed"] == 2


def test_cache_manifest_that_is_garbage(tmp_path):
    photos, out = _pairs_run(tmp_path)
    (manifest,) = (out / "cache").glob("features-sift-*/manifest.json")
    manifest.write_bytes(b"\0\1garbage")
    assert_user_error(invoke("match", photos, out, *FAST), "unreadable", "--overwrite")


def test_cache_of_another_config_is_kept_apart(tmp_path):
    """Other options write another namespace: nothing stale is reused, switching back is free."""
    photos, out = _pairs_run(tmp_path)
    assert_success(invoke("match", photos, out, *FAST[:-2], "320", "-q"))
    assert run_json(out)["counts"]["features"]["computed"] == 2
    assert len(list((out / "cache").glob("features-sift-*"))) == 2
    assert_success(invoke("match", photos, out, *FAST))
    assert run_json(out)["counts"]["features"] == {"total": 2, "cached": 2, "computed": 0}


def test_corrupted_cache_shard_is_moved_aside_and_recomputed(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg", "0005.jpg"])
    out = tmp_path / "out"
    assert_success(invoke("match", photos, out, *FAST))
    shards = list((out / "cache").glob("pairs-classic-*/shards/*.h5"))
    assert shards
    for shard in shards:
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 3])  # a truncated copy, a full disk
    assert_success(invoke("match", photos, out, *FAST))
    assert run_json(out)["counts"]["matching"]["computed"] == 3
    assert len(list((out / "cache").glob("pairs-classic-*/corrupt/*.h5"))) == len(shards)
    assert "is unreadable" in (out / "log.txt").read_text()


def test_features_shard_replaced_by_garbage(tmp_path):
    photos, out = _pairs_run(tmp_path)
    (shard,) = (out / "cache").glob("features-sift-*/shards/*.h5")
    shard.write_bytes(struct.pack("<4I", 1, 2, 3, 4) * 100)
    assert_success(invoke("match", photos, out, *FAST))
    assert run_json(out)["counts"]["features"]["computed"] == 2
