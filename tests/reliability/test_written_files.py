"""Data loss never happens: sfm3r writes only files it owns (OUT/sfm3r-manifest.json) and never into inputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

from reliability_helpers import FAST, assert_success, assert_user_error, invoke, photo_folder


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_symlinked_out_images_never_overwrites_the_photos(tmp_path):
    """`project/images -> ../photos`, then `reconstruct project/images project`: the photos stay as they are."""
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    before = _digest(photos)
    project = tmp_path / "project"
    project.mkdir()
    (project / "images").symlink_to(Path("..") / "photos")
    for extra in ([], ["--overwrite"]):
        assert_user_error(invoke("reconstruct", project / "images", project, *FAST, *extra), str(project))
    assert _digest(photos) == before


def test_symlink_into_the_photos_added_to_a_run_folder_is_refused(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    before = _digest(photos)
    out = tmp_path / "out"
    assert_success(invoke("pairs", photos, out, *FAST))
    (out / "images").symlink_to(photos)
    assert_user_error(invoke("reconstruct", photos, out, *FAST), "inside", "images")
    assert _digest(photos) == before


def test_unrelated_non_empty_out_is_refused_and_untouched(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg"])
    out = tmp_path / "documents"
    (out / "images").mkdir(parents=True)
    (out / "images" / "0003.jpg").write_bytes(b"my own picture")
    (out / "run.json").write_text("my notes")
    (out / "log.txt").write_text("my log")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for extra in ([], ["--overwrite"]):
        assert_user_error(invoke("reconstruct", photos, out, *FAST, *extra), "not empty", "sfm3r-manifest.json")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_overwrite_keeps_a_user_file_next_to_the_outputs(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg", "0005.jpg"])
    out = tmp_path / "out"
    assert_success(invoke("reconstruct", photos, out, *FAST))
    (out / "my_notes.txt").write_text("keep")
    (out / "images" / "extra.jpg").write_bytes(b"keep too")
    (out / "sparse" / "0" / "mine.txt").write_text("keep three")
    assert_success(invoke("reconstruct", photos, out, *FAST, "--overwrite"))
    assert (out / "my_notes.txt").read_text() == "keep"
    assert (out / "images" / "extra.jpg").read_bytes() == b"keep too"
    assert (out / "sparse" / "0" / "mine.txt").read_text() == "keep three"
    assert (out / "sparse" / "0" / "images.bin").is_file()


def test_a_user_file_where_an_output_goes_is_refused(tmp_path):
    """A file the user put into a run folder under a name sfm3r would write (OUT/points.ply) is not replaced."""
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg", "0005.jpg"])
    out = tmp_path / "out"
    assert_success(invoke("pairs", photos, out, *FAST))
    (out / "points.ply").write_text("my own cloud")
    assert_user_error(invoke("reconstruct", photos, out, *FAST), "points.ply", "not written by sfm3r")
    assert (out / "points.ply").read_text() == "my own cloud"


def test_export_onto_user_files_is_refused(tmp_path):
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg", "0005.jpg"])
    run = tmp_path / "run"
    assert_success(invoke("reconstruct", photos, run, *FAST))
    target = tmp_path / "mine"
    (target / "images").mkdir(parents=True)
    (target / "images" / "0003.jpg").write_bytes(b"mine")
    assert_user_error(invoke("export", run / "sparse" / "0", photos, target), "not empty")
    assert (target / "images" / "0003.jpg").read_bytes() == b"mine"
    # into a new folder it works, and again into the same (its manifest lists the files)
    for _ in range(2):
        assert_success(invoke("export", run / "sparse" / "0", photos, tmp_path / "new"))
    # never into the model's own folder
    assert_user_error(invoke("export", run / "sparse" / "0", photos, run), "input folder")
