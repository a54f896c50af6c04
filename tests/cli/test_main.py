from click.testing import CliRunner

from sfm3r import __version__
from sfm3r.cli.main import cli


def test_help_lists_the_tool():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "COLMAP" in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output
