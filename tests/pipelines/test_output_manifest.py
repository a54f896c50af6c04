"""The written-files contract: sfm3r never writes over, nor deletes, files it did not write."""

from __future__ import annotations

import json

import pytest

from sfm3r.errors import InputError
from sfm3r.pipelines.output_manifest import MANIFEST_NAME, open_output


def test_new_folder_gets_a_manifest_before_any_output(tmp_path):
    manifest = open_output(tmp_path / "out")
    assert json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["files"] == []
    manifest.claim([tmp_path / "out" / "run.json"])
    assert json.loads(manifest.path.read_text())["files"] == ["run.json"]


def test_unrelated_non_empty_folder_is_refused_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text("my own file")
    for overwrite in (False, True):
        with pytest.raises(InputError, match="not empty.*not an sfm3r run folder"):
            open_output(out, overwrite=overwrite)
    assert (out / "run.json").read_text() == "my own file"
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


def test_overwrite_deletes_only_listed_files(tmp_path):
    out = tmp_path / "out"
    manifest = open_output(out)
    manifest.claim([out / "images" / "a.jpg", out / "points.ply"])
    manifest.claim([out / "cache"], folder=True)
    (out / "images").mkdir()
    (out / "images" / "a.jpg").write_bytes(b"ours")
    (out / "images" / "mine.jpg").write_bytes(b"user")  # added by the user after the run
    (out / "cache").mkdir()
    (out / "cache" / "x.h5").write_bytes(b"ours")
    (out / "notes.txt").write_text("user")
    open_output(out, overwrite=True)
    assert (out / "images" / "mine.jpg").read_bytes() == b"user"
    assert (out / "notes.txt").read_text() == "user"
    assert not (out / "images" / "a.jpg").exists() and not (out / "cache").exists()
    assert not (out / "points.ply").exists()


def test_claiming_a_user_file_is_refused(tmp_path):
    out = tmp_path / "out"
    manifest = open_output(out)
    (out / "images").mkdir()
    (out / "images" / "a.jpg").write_bytes(b"user")
    with pytest.raises(InputError, match="not written by sfm3r"):
        manifest.claim([out / "images" / "a.jpg"])
    assert (out / "images" / "a.jpg").read_bytes() == b"user"


def test_output_symlinked_into_the_input_folder_is_refused(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"photo")
    out = tmp_path / "out"
    manifest = open_output(out, [photos])
    (out / "images").symlink_to(photos)  # OUT/images -> ../photos
    with pytest.raises(InputError, match="resolves to .*photos"):
        manifest.claim([out / "images" / "a.jpg"])
    with pytest.raises(InputError, match="input folder"):
        open_output(out, [photos])  # also at open, before any work, with a listed entry through the link
    assert (photos / "a.jpg").read_bytes() == b"photo"


def test_tampered_manifest_cannot_delete_outside_out(tmp_path):
    out = tmp_path / "out"
    open_output(out)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / MANIFEST_NAME).write_text(json.dumps({"files": ["../victim.txt", "/etc/passwd"], "folders": [".."]}))
    open_output(out, overwrite=True)
    assert victim.read_text() == "keep"


def test_garbage_manifest_is_one_line_error(tmp_path):
    out = tmp_path / "out"
    open_output(out)
    (out / MANIFEST_NAME).write_bytes(b"\0garbage")
    with pytest.raises(InputError, match="unreadable"):
        open_output(out)


def test_photos_kept_in_a_subfolder_of_a_run_folder_are_allowed_and_kept(tmp_path):
    """OUT/photos (not a name sfm3r writes) as the input: nothing is written there, --overwrite keeps it."""
    out = tmp_path / "project"
    manifest = open_output(out)
    manifest.claim([out / "run.json"])
    (out / "run.json").write_text("{}")
    photos = out / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"photo")
    open_output(out, [photos], overwrite=True)
    assert (photos / "a.jpg").read_bytes() == b"photo" and not (out / "run.json").exists()


def test_deleting_one_owned_folder_keeps_the_users_files_and_the_rest(tmp_path):
    out = tmp_path / "out"
    manifest = open_output(out)
    manifest.claim([out / "images" / "a.jpg", out / "distorted" / "sparse" / "0" / "cameras.bin", out / "points.ply"])
    for rel in ("images/a.jpg", "distorted/sparse/0/cameras.bin", "points.ply"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"ours")
    (out / "images" / "mine.jpg").write_bytes(b"user")
    assert manifest.delete_owned_under("images") == 1
    assert manifest.delete_owned_under("distorted") == 1
    assert (out / "images" / "mine.jpg").read_bytes() == b"user"
    assert not (out / "images" / "a.jpg").exists() and not (out / "distorted").exists()
    assert (out / "points.ply").exists()
    assert json.loads(manifest.path.read_text())["files"] == ["points.ply"]


def test_made_from_records_are_kept_for_listed_files_only(tmp_path):
    out = tmp_path / "out"
    manifest = open_output(out)
    manifest.claim([out / "images" / "a.jpg", out / "images" / "b.jpg"])
    record = {"recipe": "ab" * 32, "size": 4, "mtime_ns": 1}
    manifest.made_from.update({"images/a.jpg": record, "images/b.jpg": record, "images/never-claimed.jpg": record})
    manifest.save()
    again = open_output(out)
    assert again.made_from == {"images/a.jpg": record, "images/b.jpg": record}
    (out / "images").mkdir()
    (out / "images" / "b.jpg").write_bytes(b"ours")
    again.delete_owned_under("images")  # the files go, and their records with them
    assert open_output(out).made_from == {}
    manifest = open_output(out)
    manifest.claim([out / "images" / "a.jpg"])
    manifest.made_from["images/a.jpg"] = record
    manifest.save()
    assert open_output(out, overwrite=True).made_from == {}
    # an old manifest without the key, or an edited one with nonsense there: no records, no error
    payload = json.loads((out / MANIFEST_NAME).read_text())
    for made_from in (None, [1, 2], "x"):
        (out / MANIFEST_NAME).write_text(json.dumps(payload | {"made_from": made_from}))
        assert open_output(out).made_from == {}
