import os

import pytest

from sfm3r.errors import InputError
from sfm3r.pipelines.run_folder import prepare_run_folder, write_json_atomic


def test_creates_missing_folder(tmp_path):
    run = prepare_run_folder(tmp_path / "a" / "b")
    assert run.root.is_dir()
    assert run.sparse_dir == run.root / "sparse" / "0"


def test_output_path_that_is_a_file_is_a_user_error(tmp_path):
    target = tmp_path / "out"
    target.write_text("not a folder")
    with pytest.raises(InputError, match="is a file"):
        prepare_run_folder(target)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_folder_is_a_user_error(tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o500)
    with pytest.raises(InputError, match="cannot write"):
        prepare_run_folder(target / "out")


def test_overwrite_deletes_only_what_a_run_writes(tmp_path):
    run = prepare_run_folder(tmp_path / "out")
    run.claim(run.cache_dir, folder=True)
    run.claim(run.ply_path)
    (run.cache_dir).mkdir()
    (run.cache_dir / "x.h5").write_bytes(b"1")
    run.ply_path.write_bytes(b"ply")
    user_file = run.root / "my_notes.txt"
    user_file.write_text("keep me")
    prepare_run_folder(run.root, overwrite=True)
    assert not run.cache_dir.exists()
    assert not run.ply_path.exists()
    assert user_file.read_text() == "keep me"


def test_resume_keeps_the_cache(tmp_path):
    run = prepare_run_folder(tmp_path / "out")
    run.cache_dir.mkdir()
    (run.cache_dir / "x.h5").write_bytes(b"1")
    prepare_run_folder(run.root)
    assert (run.cache_dir / "x.h5").exists()


def test_write_json_atomic_leaves_no_temp_file(tmp_path):
    path = tmp_path / "run.json"
    write_json_atomic(path, {"a": 1})
    assert path.read_text().strip().startswith("{")
    assert list(tmp_path.iterdir()) == [path]
