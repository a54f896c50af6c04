"""The `sfm3r` console script. Each command parses options, builds a config, calls one pipeline function and
prints a summary. User mistakes (Sfm3rError) become one line on stderr and exit code 2; system errors
(OSError: disk full, I/O error) one line and exit code 1; Ctrl-C exit code 130."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sfm3r import __version__
from sfm3r.errors import Sfm3rError
from sfm3r.pipelines.config import PRESETS, Backend, CameraMode, CameraModel

_EXISTING_DIR = click.Path(exists=True, file_okay=False, dir_okay=True, path_type=Path)
_EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_EXISTING_PATH = click.Path(exists=True, path_type=Path)
_OUT_DIR = click.Path(path_type=Path)


class Sfm3rGroup(click.Group):
    """A click group that turns user errors (Sfm3rError) into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Sfm3rError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("Interrupted. Finished work is kept in the cache: rerun the same command to resume.", err=True)
            sys.exit(130)
        except OSError as error:  # the machine, not the code: disk full, I/O error, file removed meanwhile
            where = f" ({error.filename})" if error.filename else ""
            click.echo(
                f"Error: {error.strerror or error}{where}. Fix the disk or path (free space, permissions) and rerun "
                "the same command: finished work is kept in the cache",
                err=True,
            )
            sys.exit(1)


@click.group(cls=Sfm3rGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sfm3r")
def cli() -> None:
    """sfm3r: camera poses, intrinsics and a sparse point cloud in COLMAP format from a folder of photos.

    Start with `sfm3r reconstruct PHOTOS OUT`: OUT becomes a folder that Gaussian Splatting trainers
    (graphdeco 3DGS, gsplat, nerfstudio) read as is. The per-stage commands (pairs, match, align) run
    the pipeline up to that stage; every command resumes from OUT/cache when rerun.
    """


def _pipeline_options(func):
    """The options shared by reconstruct and the per-stage commands."""
    options = [
        click.option("--preset", type=click.Choice(list(PRESETS)), default="default", show_default=True,
                     help="Named settings: fast (previews, big sets), default, accurate (COLMAP-sized SIFT)."),
        click.option("--checkpoint", type=_EXISTING_FILE, default=None,
                     help="MASt3R checkpoint (.pth or .safetensors). Without it the weight-free classic SIFT "
                          "backend is used."),
        click.option("--backend", type=click.Choice([b.value for b in Backend]), default=None,
                     help="Pairwise backend [default: mast3r with --checkpoint, else classic]."),
        click.option("--retrieval-checkpoint", type=_EXISTING_FILE, default=None,
                     help="MASt3R retrieval head (*_retrieval_trainingfree.pth) for retrieval graphs; "
                          "without it retrieval uses the images' SIFT features."),
        click.option("--codebook", type=_EXISTING_FILE, default=None,
                     help="ASMK codebook (.pkl) that goes with --retrieval-checkpoint."),
        click.option("--scene-graph", default=None,
                     help="Which pairs to match: auto (complete up to 40 images, else retrieval-20-10), "
                          "complete, swin-W[-noncyclic], logwin-W[-noncyclic], oneref-R, retrieval-NA-K."),
        click.option("--pairs-file", type=_EXISTING_FILE, default=None,
                     help="Match exactly these pairs ('name1 name2' per line, as COLMAP/hloc); overrides "
                          "--scene-graph."),
        click.option("--device", default=None, help="auto (CUDA when available), cpu, cuda, cuda:N [default: auto]."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="MASt3R pairs decoded per batch [default: 4]."),
        click.option("--net-image-size", type=click.Choice(["512", "224"]), default=None,
                     callback=lambda ctx, param, value: int(value) if value else None,
                     help="MASt3R input resolution (long side) [default: 512, as the official checkpoints]."),
        click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default=None,
                     help="Mixed precision for MASt3R on CUDA [default: auto = bf16 on CUDA, off on CPU]."),
        click.option("--max-image-size", type=click.IntRange(min=0), default=None,
                     help="Longest side (px) at which SIFT runs; 0 = full size [default: from the preset]."),
        click.option("--camera-mode", type=click.Choice([m.value for m in CameraMode]), default=None,
                     help="Which images share one camera (focal, principal point): auto = those of the same "
                          "size and EXIF focal (or none), single = all, per-image = none [default: auto]."),
        click.option("--shared-intrinsics", is_flag=True, default=None,
                     help="Same as --camera-mode single: one camera for all images (same camera, same zoom)."),
        click.option("--fixed-principal-point", is_flag=True, default=None,
                     help="Keep every principal point at the image centre. By default it is refined for "
                          "cameras shared by 5 or more images, and the exported images are cropped so that "
                          "it is centred for graphdeco 3DGS."),
        click.option("--camera-model", type=click.Choice([m.value for m in CameraModel]), default=None,
                     help="Camera model written to the COLMAP model [default: PINHOLE]."),
        click.option("--known-intrinsics", type=_EXISTING_PATH, default=None,
                     help="Known cameras, kept fixed: a COLMAP model folder, or a cameras.txt with one camera."),
        click.option("--recursive", is_flag=True, default=None, help="Also take images from sub-folders."),
        click.option("--skip-bad-images", is_flag=True, default=None,
                     help="Warn about unreadable images and go on without them (default: stop)."),
        click.option("--text", "write_text", is_flag=True, default=None,
                     help="Also write the COLMAP model as text (.txt) next to the binary files."),
        click.option("--overwrite", is_flag=True, default=None,
                     help="Delete OUT's earlier results and cache first (default: resume from them)."),
        click.option("--workers", type=click.Choice(["local", "ray"]), default=None,
                     help="Where features and pairs are computed: local (this process) or ray (a Ray cluster, "
                          "needs `pip install sfm3r[ray]`; see docs/distributed.md) [default: local]."),
        click.option("--ray-address", default=None,
                     help="With --workers ray: auto or HOST:PORT of a running cluster (`ray start --head`) "
                          "[default: start a local cluster on this machine]."),
        click.option("--ray-num-cpus", type=click.IntRange(min=1), default=None,
                     help="With --workers ray and no --ray-address: CPUs of the local cluster [default: all]."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars, warnings only."),
        click.option("--verbose", "-v", is_flag=True, help="Debug messages."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _conf_from_options(options: dict):
    import dataclasses

    from sfm3r.pipelines.config import preset_conf

    preset = options.pop("preset")
    max_image_size = options.pop("max_image_size")
    shared = options.pop("shared_intrinsics")
    camera_mode = options.pop("camera_mode")
    fixed_pp = options.pop("fixed_principal_point")
    ray_address, ray_num_cpus = options.pop("ray_address", None), options.pop("ray_num_cpus", None)
    if (ray_address is not None or ray_num_cpus is not None) and options.get("workers") != "ray":
        raise click.UsageError("--ray-address and --ray-num-cpus need --workers ray")
    if ray_address is not None and ray_num_cpus is not None:
        raise click.UsageError("--ray-num-cpus sizes a local cluster; a cluster at --ray-address has its own CPUs")
    for key in ("quiet", "verbose"):
        options.pop(key)
    conf = preset_conf(preset, **options)
    if max_image_size is not None:
        conf = dataclasses.replace(conf, sift=dataclasses.replace(conf.sift, max_image_size=max_image_size))
    if shared and camera_mode not in (None, CameraMode.SINGLE):
        raise click.UsageError(f"--shared-intrinsics contradicts --camera-mode {camera_mode}; give one of them")
    if shared:
        camera_mode = CameraMode.SINGLE
    align = conf.align
    if camera_mode is not None:
        align = dataclasses.replace(align, camera_mode=CameraMode(camera_mode))
    if fixed_pp:
        align = dataclasses.replace(align, reprojection=dataclasses.replace(align.reprojection, optimise_pp=False))
    if ray_address is not None or ray_num_cpus is not None:
        from sfm3r.pipelines.config import RayConf

        conf = dataclasses.replace(conf, ray=RayConf(address=ray_address, num_cpus=ray_num_cpus))
    return dataclasses.replace(conf, align=align)


def _run(images: Path, out: Path, options: dict, stop_after) -> None:
    """Set up logging and progress, run the pipeline up to `stop_after`, print the summary."""
    import dataclasses

    from sfm3r.cli.logging_setup import configure_logging, detach_handler, rich_progress
    from sfm3r.pipelines.reconstruct import reconstruct
    from sfm3r.pipelines.run_folder import check_separate_from_inputs, prepare_run_folder
    from sfm3r.pipelines.summary import format_summary

    quiet, verbose = options["quiet"], options["verbose"]
    conf = _conf_from_options(dict(options))
    check_separate_from_inputs(out, images, recursive=conf.recursive)  # before --overwrite deletes anything
    # Prepare (or clean, with --overwrite) the run folder first, so the log file lands in it.
    run = prepare_run_folder(out, overwrite=conf.overwrite)
    conf = dataclasses.replace(conf, overwrite=False)
    handler = configure_logging(verbose=verbose, quiet=quiet, log_file=run.log_path)
    try:
        with rich_progress(enabled=not quiet) as progress:
            result = reconstruct(images, run.root, conf, progress=progress, stop_after=stop_after)
    finally:
        detach_handler(handler)
    click.echo(format_summary(result))


def _stage_command(name: str, stage: str, doc: str) -> None:
    """Register `sfm3r NAME IMAGES OUT [options]`: the pipeline up to `stage` (earlier stages resume from the cache)."""

    def command(images: Path, out: Path, **options) -> None:
        from sfm3r.pipelines.reconstruct import Stage

        _run(images, out, options, Stage(stage))

    command.__doc__ = doc
    command = _pipeline_options(command)
    command = click.argument("out", type=_OUT_DIR)(command)
    command = click.argument("images", type=_EXISTING_DIR)(command)
    cli.command(name)(command)


_stage_command(
    "reconstruct",
    "export",
    """Reconstruct the photos in IMAGES into OUT (COLMAP model + Gaussian Splatting folder).

    OUT gets images/ (EXIF-rotated copies), sparse/0/ (cameras.bin, images.bin, points3D.bin),
    points.ply, preview.png, run.json and log.txt. Rerunning resumes from OUT/cache.
    """,
)
_stage_command("pairs", "pairs", "Choose the image pairs to match; writes OUT/pairs.txt ('name1 name2' per line).")
_stage_command("match", "match", "Compute the pairwise matches and 3D points into OUT/cache (after the pairs stage).")
_stage_command("align", "align", "Align the cached pairs into one model: OUT/sparse/0, OUT/points.ply, OUT/preview.png.")


@cli.command()
@click.argument("model", type=_EXISTING_DIR)
@click.argument("images", type=_EXISTING_DIR)
@click.argument("out", type=_OUT_DIR)
@click.option("--text", "write_text", is_flag=True, help="Also write the model as text.")
@click.option("--recursive", is_flag=True, help="Images may be in sub-folders (names like a/b.jpg).")
@click.option("--no-crop", is_flag=True,
              help="Keep the images whole even when a principal point is off-centre; graphdeco 3DGS, which "
                   "assumes a centred one, then sees a shifted image.")  # fmt: skip
def export(model: Path, images: Path, out: Path, write_text: bool, recursive: bool, no_crop: bool) -> None:
    """Lay out a Gaussian Splatting folder OUT from a COLMAP MODEL folder and its IMAGES folder.

    OUT gets images/ (EXIF applied, flat unique names), sparse/0/ and points.ply. Works with any COLMAP
    model with pinhole cameras, also one not made by sfm3r. Images of a camera whose principal point is
    off-centre are cropped (by at most 10 %) so that it is centred, as graphdeco 3DGS assumes.
    """
    from sfm3r.pipelines.export import export_model

    written = export_model(
        model, images, out, text=write_text, recursive=recursive, centre_principal_points=not no_crop
    )
    click.echo(f"Wrote {written}")


@cli.command()
@click.argument("estimate", type=_EXISTING_DIR)
@click.argument("ground_truth", type=_EXISTING_DIR)
@click.option("--json", "json_path", type=_OUT_DIR, default=None, help="Also write the metrics as JSON here.")
def evaluate(estimate: Path, ground_truth: Path, json_path: Path | None) -> None:
    """Compare the COLMAP model ESTIMATE with GROUND_TRUTH (images matched by name).

    Either argument may be a model folder (cameras/images/points3D) or a run folder holding sparse/0.
    Prints registration rate, RRA/RTA@5/15, mAA@30, AUC@3/5/10 of pairwise relative poses, ATE and focal error.
    """
    from sfm3r.pipelines.evaluate import evaluate_models, format_metrics

    metrics = evaluate_models(estimate, ground_truth, json_path)
    click.echo(format_metrics(metrics))


@cli.command()
@click.argument("model", type=_EXISTING_DIR)
def info(model: Path) -> None:
    """Summarise a COLMAP model (or a run folder holding sparse/0): cameras, images, points, errors."""
    from sfm3r.pipelines.evaluate import describe_model

    click.echo(describe_model(model))


def main() -> None:
    cli()
