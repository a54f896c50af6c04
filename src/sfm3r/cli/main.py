"""The `sfm3r` console script: the top-level click group and the user-error boundary."""

from __future__ import annotations

import sys

import click

from sfm3r import __version__
from sfm3r.errors import Sfm3rError


class Sfm3rGroup(click.Group):
    """A click group that turns user errors (Sfm3rError) into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Sfm3rError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(2)


@click.group(cls=Sfm3rGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sfm3r")
def cli() -> None:
    """sfm3r: camera poses, intrinsics and a sparse point cloud in COLMAP format from a folder of photos."""


def main() -> None:
    cli()
