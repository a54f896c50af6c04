"""The command-line options of the pipeline commands, and which command shows which.

Choices are spelled out here rather than read from `pipelines.config` so that building the CLI (and
`sfm3r --help`) imports neither torch nor pycolmap; tests/cli/test_options.py checks that they match the
config's enums. Values that click can check are checked here, before any work starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import click

PRESET_NAMES = ("fast", "default", "accurate")  # pipelines.config.PRESETS
BACKENDS = ("auto", "classic", "mast3r")  # pipelines.config.Backend
CAMERA_MODES = ("auto", "single", "per-image")  # sfm.align.camera_groups.CameraMode
CAMERA_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "AUTO")  # sfm.geometry.camera_model

EXISTING_DIR = click.Path(exists=True, file_okay=False, dir_okay=True, path_type=Path)
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
EXISTING_PATH = click.Path(exists=True, path_type=Path)
OUT_DIR = click.Path(path_type=Path)


def _check_scene_graph(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Parse --scene-graph now, so that a typo fails before any image is read."""
    if value is None:
        return None
    if value.strip().lower() == "auto":
        return "auto"
    from sfm3r.errors import InputError
    from sfm3r.sfm.graph.scene_graph import parse_graph  # numpy + networkx, no torch

    try:
        parse_graph(value)
    except InputError as error:
        raise click.BadParameter(str(error)) from None
    return value


def _check_device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """auto, cpu, cuda or cuda:N; whether CUDA is present is checked when the run starts."""
    if value is None:
        return None
    head, _, index = value.partition(":")
    if value in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit()):
        return value
    raise click.BadParameter(f"unknown device {value!r}; use auto, cpu, cuda or cuda:N")


def _check_downscales(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[int, ...] | None:
    """--downscales 2 4 8 (joined to "2,4,8" by ListOptionCommand), 2,4,8 or repeated: sorted unique ints >= 2."""
    if not value:
        return None
    tokens = [token for text in value for token in re.split(r"[,\s]+", text.strip()) if token]
    if not tokens:
        raise click.BadParameter("no factor given; e.g. --downscales 2 4 8")
    factors = set()
    for token in tokens:
        if not re.fullmatch(r"[+-]?[0-9]+", token):
            raise click.BadParameter(f"{token!r} is not an integer; give integer factors >= 2, e.g. --downscales 2 4 8")
        if int(token) < 2:
            raise click.BadParameter(f"{int(token)} is below 2; give integer factors >= 2, e.g. --downscales 2 4 8")
        factors.add(int(token))
    return tuple(sorted(factors))


DOWNSCALES_OPTION = click.option(
    "--downscales", multiple=True, metavar="F [F ...]", callback=_check_downscales,
    help="Also write OUT/images_F/ for each factor F (integers >= 2, e.g. --downscales 2 4 8): the images of "
         "images/ downscaled by F to floor(W/F) x floor(H/F), same names, as gsplat (--data_factor F) and "
         "nerfstudio (--downscale-factor F, or automatically) read them. A rerun keeps unchanged copies and "
         "removes those of factors no longer given [default: none].",
)  # fmt: skip

_LIST_OPTIONS = ("--downscales",)  # options that take several values after one flag
_NUMBER = re.compile(r"[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)")


def join_list_values(args: list[str]) -> list[str]:
    """["--downscales", "2", "4", "8", ...] -> ["--downscales", "2,4,8", ...].

    click options take a fixed number of values, so the numbers that follow a list option (after its first
    value) are joined into that value with commas; the option's callback splits and checks them. Numbers
    that are not integers are joined too, so that the callback names them instead of click calling them
    extra arguments. Nothing after ``--`` is touched.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            out += [arg, *args[i:]]
            break
        name, equals, first = arg.partition("=")
        if name not in _LIST_OPTIONS:
            out.append(arg)
            continue
        values = [first] if equals else args[i : i + 1]
        i += 0 if equals else len(values)
        while values and i < len(args) and _NUMBER.fullmatch(args[i]):
            values.append(args[i])
            i += 1
        out += [name, ",".join(values)] if values else [name]
    return out


class ListOptionCommand(click.Command):
    """A click command whose list options (``--downscales 2 4 8``) take several values after one flag."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, join_list_values(args))


_OPTIONS: dict[str, Callable] = {
    "preset": click.option(
        "--preset", type=click.Choice(PRESET_NAMES), default="default", show_default=True,
        help="Named settings: fast (previews, big sets), default, accurate (COLMAP-sized SIFT).",
    ),
    "checkpoint": click.option(
        "--checkpoint", type=EXISTING_FILE, default=None,
        help="MASt3R checkpoint (.pth or .safetensors). Without it the weight-free classic SIFT backend is used.",
    ),
    "backend": click.option(
        "--backend", type=click.Choice(BACKENDS), default=None,
        help="Pairwise backend [default: mast3r with --checkpoint, else classic].",
    ),
    "retrieval_checkpoint": click.option(
        "--retrieval-checkpoint", type=EXISTING_FILE, default=None,
        help="MASt3R retrieval head (*_retrieval_trainingfree.pth) for retrieval graphs; without it retrieval "
             "uses the images' SIFT features.",
    ),
    "codebook": click.option(
        "--codebook", type=EXISTING_FILE, default=None, help="ASMK codebook (.pkl) that goes with --retrieval-checkpoint."
    ),
    "scene_graph": click.option(
        "--scene-graph", default=None, callback=_check_scene_graph,
        help="Which pairs to match: auto (complete up to 40 images, else retrieval-20-10), complete, "
             "swin-W[-noncyclic], logwin-W[-noncyclic], oneref-R, retrieval-NA-K.",
    ),
    "pairs_file": click.option(
        "--pairs-file", type=EXISTING_FILE, default=None,
        help="Match exactly these pairs ('name1 name2' per line, as COLMAP/hloc); overrides --scene-graph.",
    ),
    "device": click.option(
        "--device", default=None, callback=_check_device,
        help="auto (CUDA when available), cpu, cuda, cuda:N [default: auto].",
    ),
    "batch_size": click.option(
        "--batch-size", type=click.IntRange(min=1), default=None, help="MASt3R pairs decoded per batch [default: 4]."
    ),
    "net_image_size": click.option(
        "--net-image-size", type=click.Choice(["512", "224"]), default=None,
        callback=lambda ctx, param, value: int(value) if value else None,
        help="MASt3R input resolution (long side) [default: 512, as the official checkpoints].",
    ),
    "amp": click.option(
        "--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default=None,
        help="Mixed precision for MASt3R on CUDA [default: auto = bf16 on CUDA, off on CPU].",
    ),
    "max_image_size": click.option(
        "--max-image-size", type=click.IntRange(min=0), default=None,
        help="Longest side (px) at which SIFT runs; 0 = full size [default: from the preset].",
    ),
    "camera_mode": click.option(
        "--camera-mode", type=click.Choice(CAMERA_MODES), default=None,
        help="Which images share one camera (focal, principal point): auto = those of the same size and EXIF "
             "focal (or none), single = all, per-image = none [default: auto].",
    ),
    "shared_intrinsics": click.option(
        "--shared-intrinsics", is_flag=True, default=None,
        help="Same as --camera-mode single: one camera for all images (same camera, same zoom).",
    ),
    "fixed_principal_point": click.option(
        "--fixed-principal-point", is_flag=True, default=None,
        help="Keep every principal point at the image centre. By default it is refined for cameras shared by "
             "3 or more images, and the exported images are cropped so that it is centred for graphdeco 3DGS.",
    ),
    "camera_model": click.option(
        "--camera-model", type=click.Choice(CAMERA_MODELS, case_sensitive=False), default=None,
        help="Camera model of the COLMAP model: PINHOLE, SIMPLE_PINHOLE, or a lens model whose distortion is "
             "estimated (SIMPLE_RADIAL, RADIAL, OPENCV; AUTO = per camera, the richest of pinhole, SIMPLE_RADIAL, RADIAL, OPENCV that held-out matches support). The "
             "3DGS folder always gets undistorted PINHOLE images [default: PINHOLE].",
    ),
    "min_track_length": click.option(
        "--min-track-length", type=click.IntRange(min=2), default=None,
        help="Images a point of the model must be seen in. 3 drops two-view points, as COLMAP does (a third view "
             "confirms the match); images that would keep fewer than 100 points keep theirs. 2 keeps every "
             "triangulated point (more points to start 3DGS from) [default: 3].",
    ),
    "known_intrinsics": click.option(
        "--known-intrinsics", type=EXISTING_PATH, default=None,
        help="Known cameras, kept fixed: a COLMAP model folder, or a cameras.txt with one camera.",
    ),
    "recursive": click.option("--recursive", is_flag=True, default=None, help="Also take images from sub-folders."),
    "skip_bad_images": click.option(
        "--skip-bad-images", is_flag=True, default=None,
        help="Warn about unreadable images and go on without them (default: stop).",
    ),
    "write_text": click.option(
        "--text", "write_text", is_flag=True, default=None,
        help="Also write the COLMAP model as text (.txt) next to the binary files.",
    ),
    "downscales": DOWNSCALES_OPTION,
    "overwrite": click.option(
        "--overwrite", is_flag=True, default=None,
        help="Delete OUT's earlier results and cache first (default: resume from them).",
    ),
    "workers": click.option(
        "--workers", type=click.Choice(["local", "ray"]), default=None,
        help="Where features and pairs are computed: local (this process) or ray (a Ray cluster, needs "
             "`pip install sfm3r[ray]`; see docs/distributed.md) [default: local].",
    ),
    "processes": click.option(
        "--processes", type=click.IntRange(min=1), default=None,
        help="Local worker processes for SIFT extraction and pair verification (1 = none, all in this process) "
             "[default: one per CPU core, at most 8].",
    ),
    "ray_address": click.option(
        "--ray-address", default=None,
        help="With --workers ray: auto or HOST:PORT of a running cluster (`ray start --head`) [default: start a "
             "local cluster on this machine].",
    ),
    "ray_num_cpus": click.option(
        "--ray-num-cpus", type=click.IntRange(min=1), default=None,
        help="With --workers ray and no --ray-address: CPUs of the local cluster [default: all].",
    ),
    "quiet": click.option("--quiet", "-q", is_flag=True, help="No progress bars, warnings only."),
    "verbose": click.option("--verbose", "-v", is_flag=True, help="Debug messages."),
}  # fmt: skip

# What each stage command needs: pairs chooses pairs (retrieval may run SIFT or the MASt3R encoder),
# match adds the pairwise backend's options, align and reconstruct add the alignment's and the writer's.
_INPUTS = ["recursive", "skip_bad_images"]
_PAIRS = ["preset", "checkpoint", "backend", "retrieval_checkpoint", "codebook", "scene_graph", "pairs_file",
          "max_image_size", "net_image_size", "device"]  # fmt: skip
_MATCH = _PAIRS + ["batch_size", "amp", "known_intrinsics"]
_ALIGN = _MATCH + ["camera_mode", "shared_intrinsics", "fixed_principal_point", "camera_model", "min_track_length",
                   "write_text"]
_RUN = ["workers", "processes", "ray_address", "ray_num_cpus", "overwrite", "quiet", "verbose"]
STAGE_OPTIONS: dict[str, list[str]] = {
    "pairs": _PAIRS + _INPUTS + _RUN,
    "match": _MATCH + _INPUTS + _RUN,
    "align": _ALIGN + _INPUTS + _RUN,
    "reconstruct": _ALIGN + ["downscales"] + _INPUTS + _RUN,  # align writes no images/ (removes them)
}


def stage_options(command: str):
    """Decorator adding the options that `command` (pairs, match, align, reconstruct) uses, in a fixed order."""

    def decorate(func):
        for name in reversed(STAGE_OPTIONS[command]):
            func = _OPTIONS[name](func)
        return func

    return decorate
