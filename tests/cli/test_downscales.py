"""--downscales on the command line: `--downscales 2 4 8` parses, bad factors are one-line errors before any work."""

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from sfm3r.cli.main import cli
from sfm3r.cli.options import join_list_values

SAMPLE = Path(__file__).resolve().parents[2] / "sample"


@pytest.mark.parametrize(
    "args, joined",
    [
        (["in", "out", "--downscales", "2", "4", "8"], ["in", "out", "--downscales", "2,4,8"]),
        (["--downscales", "2", "4", "in", "out", "-q"], ["--downscales", "2,4", "in", "out", "-q"]),
        (["--downscales=2", "4", "in"], ["--downscales", "2,4", "in"]),
        (["--downscales", "2,4", "--downscales", "8"], ["--downscales", "2,4", "--downscales", "8"]),
        (["--downscales", "2", "1.5", "-3"], ["--downscales", "2,1.5,-3"]),  # joined, for the check to name them
        (["--downscales"], ["--downscales"]),  # click reports the missing value
        (["--", "--downscales", "2", "4"], ["--", "--downscales", "2", "4"]),
    ],
)
def test_list_values_are_joined_for_click(args, joined):
    assert join_list_values(args) == joined


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("0003.jpg", "0004.jpg"):
        shutil.copy(SAMPLE / "images" / name, folder / name)
    return folder


@pytest.mark.parametrize("command", ["reconstruct", "export"])
@pytest.mark.parametrize(
    "factors, word", [(["1"], "1 is below 2"), (["0"], "0 is below 2"), (["2", "-4"], "-4 is below 2"),
                      (["2", "1.5"], "'1.5' is not an integer"), (["two"], "'two' is not an integer")],
)  # fmt: skip
def test_bad_factors_are_one_line_errors_before_any_work(photos, tmp_path, command, factors, word):
    out = tmp_path / "out"
    inputs = [str(SAMPLE / "gt"), str(photos)] if command == "export" else [str(photos)]
    result = CliRunner().invoke(cli, [command, *inputs, str(out), "--downscales", *factors])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and word in errors[0] and "--downscales" in errors[0]
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing started


def test_help_explains_downscales_where_the_3dgs_folder_is_written():
    for command in ("reconstruct", "export"):
        result = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
        assert result.exit_code == 0
        assert "--downscales F [F ...]" in result.output and "images_F/" in result.output
        assert "floor(W/F)" in result.output
    # `align` writes the model of the original photos and no images/: it has nothing to downscale
    assert "--downscales" not in CliRunner().invoke(cli, ["align", "--help"]).output


def test_export_writes_the_factors_given_after_one_flag(photos, tmp_path):
    out = tmp_path / "out"
    gt_photos = tmp_path / "gt_photos"  # the sample GT model holds 6 images: give it all six
    shutil.copytree(SAMPLE / "images", gt_photos)
    result = CliRunner().invoke(cli, ["export", str(SAMPLE / "gt"), str(gt_photos), str(out), "--downscales", "4", "2"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (out / "images").iterdir())
    assert len(names) == 6
    for factor in (2, 4):
        assert sorted(p.name for p in (out / f"images_{factor}").iterdir()) == names
    assert (out / "transforms.json").is_file()


def test_a_factor_larger_than_a_photo_is_refused_before_any_work(photos, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["reconstruct", str(photos), str(out), "--downscales", "2", "600", "-q"])
    assert result.exit_code == 2
    assert "--downscales 600 is larger than the image 0003.jpg (768x512 pixels)" in result.output
    assert "Traceback" not in result.output
    assert not (out / "cache").exists() or not any((out / "cache").iterdir())  # no feature extracted
    assert not (out / "sparse").exists()
