import pytest
from click.testing import CliRunner

from sfm3r import __version__
from sfm3r.cli.main import cli

COMMANDS = ["reconstruct", "pairs", "match", "align", "export", "evaluate", "info"]


def test_help_lists_the_tool_and_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "COLMAP" in result.output
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_missing_input_folder_is_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["reconstruct", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "Traceback" not in result.output


def test_empty_folder_is_one_line_error(tmp_path):
    (tmp_path / "photos").mkdir()
    result = CliRunner().invoke(cli, ["reconstruct", str(tmp_path / "photos"), str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2
    assert "Error:" in result.output and "photos" in result.output
    assert "Traceback" not in result.output


def test_output_that_is_a_file_is_one_line_error(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "out").write_text("")
    result = CliRunner().invoke(cli, ["reconstruct", str(tmp_path / "photos"), str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2
    assert "is a file" in result.output


def test_unknown_scene_graph_is_one_line_error(tmp_path):
    import shutil
    from pathlib import Path

    photos = tmp_path / "photos"
    photos.mkdir()
    sample = Path(__file__).resolve().parents[2] / "sample" / "images"
    for name in ("0003.jpg", "0004.jpg"):
        shutil.copy(sample / name, photos / name)
    result = CliRunner().invoke(cli, ["pairs", str(photos), str(tmp_path / "out"), "--scene-graph", "bogus", "-q"])
    assert result.exit_code == 2
    assert "bogus" in result.output


def test_contradicting_camera_options_are_one_line_error(tmp_path):
    (tmp_path / "photos").mkdir()
    args = ["reconstruct", str(tmp_path / "photos"), str(tmp_path / "out"), "--shared-intrinsics",
            "--camera-mode", "per-image", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "contradicts" in result.output and "Traceback" not in result.output


def test_camera_options_reach_the_alignment_config():
    from sfm3r.cli.main import _conf_from_options
    from sfm3r.pipelines.config import CameraMode

    base = {"preset": "default", "max_image_size": None, "quiet": False, "verbose": False,
            "shared_intrinsics": None, "camera_mode": None, "fixed_principal_point": None}
    default = _conf_from_options(dict(base))
    assert default.align.camera_mode == CameraMode.AUTO and default.align.reprojection.optimise_pp
    single = _conf_from_options({**base, "shared_intrinsics": True})
    assert single.align.camera_mode == CameraMode.SINGLE
    per_image = _conf_from_options({**base, "camera_mode": "per-image", "fixed_principal_point": True})
    assert per_image.align.camera_mode == CameraMode.PER_IMAGE and not per_image.align.reprojection.optimise_pp
