"""The `sfm3r` console script. Each command parses options, builds a config, calls one pipeline function and
prints a summary. User mistakes (Sfm3rError) become one line on stderr and exit code 2; system errors
(OSError: disk full, I/O error) one line and exit code 1; Ctrl-C exit code 130, SIGTERM 143, SIGHUP 129
(128 + the signal number, as shells report them), each with the same resume line."""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import click

from sfm3r import __version__
from sfm3r.cli.options import DOWNSCALES_OPTION, EXISTING_DIR, OUT_DIR, ListOptionCommand, stage_options
from sfm3r.errors import Sfm3rError


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread so that it unwinds like Ctrl-C (caches commit)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_signalled(signum: int, frame: object) -> None:
    raise Signalled(signum)


def _handle_termination_like_ctrl_c() -> None:
    """SIGTERM and SIGHUP raise Signalled (Python handlers can only be set from the main thread)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _raise_signalled)


class _AfterPycolmapImport:
    """Wraps pycolmap's import, once: PIL first, then pycolmap, then the signal handlers set again.

    Importing pycolmap installs glog's failure handler for SIGTERM, which prints a C stack dump and kills the
    process, over ours. pycolmap is imported where it is used (a cached rerun never loads it: ~0.1 s), so
    the handlers are set again right after it loads. PIL before pycolmap: the other order once crashed saving
    PNGs (zlib double free). The finder finds nothing itself; it only wraps the loader the others find. (A
    plain class: sys.meta_path takes any object with find_spec, and importlib.abc costs ~20 ms to import.)
    """

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if fullname != "pycolmap":
            return None
        sys.meta_path.remove(self)  # once, and so that find_spec below asks the other finders
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def load_then_handle_signals(module: object) -> None:
            import PIL.Image  # noqa: F401

            load(module)
            _handle_termination_like_ctrl_c()

        spec.loader.exec_module = load_then_handle_signals  # type: ignore[method-assign]
        return spec


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP behave like Ctrl-C, also after pycolmap is imported (see _AfterPycolmapImport)."""
    _handle_termination_like_ctrl_c()
    if "pycolmap" not in sys.modules and not any(isinstance(f, _AfterPycolmapImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterPycolmapImport())


def _asks_for_help(ctx: click.Context) -> bool:
    """Whether the command line only asks for a help page (nothing will run)."""
    with warnings.catch_warnings():  # click 8.2 deprecates protected_args (the sub-command and its arguments)
        warnings.simplefilter("ignore", DeprecationWarning)
        tokens = [*ctx.protected_args, *ctx.args]
    return any(arg in ("-h", "--help") for arg in tokens)


class Sfm3rGroup(click.Group):
    """A click group that turns user errors (Sfm3rError) into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            if not _asks_for_help(ctx):
                install_signal_handlers()
            return super().invoke(ctx)
        except Sfm3rError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as interrupt:
            click.echo("Interrupted. Finished work is kept in the cache: rerun the same command to resume.", err=True)
            sys.exit(128 + interrupt.signum if isinstance(interrupt, Signalled) else 130)
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


def _conf_from_options(options: dict):
    import dataclasses

    from sfm3r.pipelines.config import CameraMode, preset_conf

    preset = options.pop("preset")
    max_image_size = options.pop("max_image_size", None)
    shared = options.pop("shared_intrinsics", None)
    camera_mode = options.pop("camera_mode", None)
    fixed_pp = options.pop("fixed_principal_point", None)
    min_track_length = options.pop("min_track_length", None)
    ray_address, ray_num_cpus = options.pop("ray_address", None), options.pop("ray_num_cpus", None)
    if (ray_address is not None or ray_num_cpus is not None) and options.get("workers") != "ray":
        raise click.UsageError("--ray-address and --ray-num-cpus need --workers ray")
    if ray_address is not None and ray_num_cpus is not None:
        raise click.UsageError("--ray-num-cpus sizes a local cluster; a cluster at --ray-address has its own CPUs")
    for key in ("quiet", "verbose"):
        options.pop(key, None)
    conf = preset_conf(preset, **options)
    if max_image_size is not None:
        conf = dataclasses.replace(conf, sift=dataclasses.replace(conf.sift, max_image_size=max_image_size))
    if shared and camera_mode not in (None, CameraMode.SINGLE.value):
        raise click.UsageError(f"--shared-intrinsics contradicts --camera-mode {camera_mode}; give one of them")
    if shared:
        camera_mode = CameraMode.SINGLE
    align = conf.align
    if camera_mode is not None:
        align = dataclasses.replace(align, camera_mode=CameraMode(camera_mode))
    if fixed_pp:
        align = dataclasses.replace(align, reprojection=dataclasses.replace(align.reprojection, optimise_pp=False))
    if min_track_length is not None:
        align = dataclasses.replace(align, min_track_length=min_track_length)
    if ray_address is not None or ray_num_cpus is not None:
        from sfm3r.pipelines.config import RayConf

        conf = dataclasses.replace(conf, ray=RayConf(address=ray_address, num_cpus=ray_num_cpus))
    return dataclasses.replace(conf, align=align)


def _run(images: Path, out: Path, options: dict, stop_after) -> None:
    """Set up logging and progress, run the pipeline up to `stop_after`, print the summary."""
    import dataclasses

    from sfm3r.cli.console import print_summary, run_console
    from sfm3r.pipelines.reconstruct import reconstruct
    from sfm3r.pipelines.run_folder import check_separate_from_inputs, prepare_run_folder
    from sfm3r.pipelines.validation import validate_options

    quiet, verbose = options["quiet"], options["verbose"]
    conf = _conf_from_options(dict(options))
    validate_options(images, conf)  # every option and input file, before anything is read or written
    check_separate_from_inputs(out, images, recursive=conf.recursive)  # before --overwrite deletes anything
    # Prepare (or clean, with --overwrite) the run folder first, so the log file lands in it.
    run = prepare_run_folder(out, overwrite=conf.overwrite, inputs=[images])
    conf = dataclasses.replace(conf, overwrite=False)
    with run_console(verbose=verbose, quiet=quiet, log_file=run.log_path) as progress:
        result = reconstruct(images, run.root, conf, progress=progress, stop_after=stop_after)
    print_summary(result)


def _stage_command(name: str, stage: str, doc: str) -> None:
    """Register `sfm3r NAME IMAGES OUT [options]`: the pipeline up to `stage` (earlier stages resume from the cache)."""

    def command(images: Path, out: Path, **options) -> None:
        from sfm3r.pipelines.reconstruct import Stage

        _run(images, out, options, Stage(stage))

    command.__doc__ = doc
    command = stage_options(name)(command)
    command = click.argument("out", type=OUT_DIR)(command)
    command = click.argument("images", type=EXISTING_DIR)(command)
    cli.command(name, cls=ListOptionCommand)(command)


_stage_command(
    "reconstruct",
    "export",
    """Reconstruct the photos in IMAGES into OUT (COLMAP model + Gaussian Splatting folder).

    OUT gets images/ (EXIF-rotated copies), sparse/0/ (cameras.bin, images.bin, points3D.bin),
    points.ply, nerfstudio's transforms.json (+ sparse_pc.ply), preview.png, run.json and log.txt, and
    images_2/, images_4/, ... with --downscales. Rerunning resumes from OUT/cache.
    """,
)
_stage_command("pairs", "pairs", "Choose the image pairs to match; writes OUT/pairs.txt ('name1 name2' per line).")
_stage_command("match", "match", "Compute the pairwise matches and 3D points into OUT/cache (after the pairs stage).")
_stage_command("align", "align", "Align the cached pairs into one model: OUT/sparse/0, OUT/points.ply, OUT/preview.png.")


@cli.command(cls=ListOptionCommand)
@click.argument("model", type=EXISTING_DIR)
@click.argument("images", type=EXISTING_DIR)
@click.argument("out", type=OUT_DIR)
@click.option("--text", "write_text", is_flag=True, help="Also write the model as text.")
@click.option("--recursive", is_flag=True, help="Images may be in sub-folders (names like a/b.jpg).")
@click.option("--no-crop", is_flag=True,
              help="Keep the images whole even when a principal point is off-centre; graphdeco 3DGS, which "
                   "assumes a centred one, then sees a shifted image.")  # fmt: skip
@DOWNSCALES_OPTION
def export(
    model: Path, images: Path, out: Path, write_text: bool, recursive: bool, no_crop: bool,
    downscales: tuple[int, ...] | None,
) -> None:  # fmt: skip
    """Lay out a Gaussian Splatting folder OUT from a COLMAP MODEL folder and its IMAGES folder.

    OUT gets images/ (EXIF applied, flat unique names), sparse/0/, points.ply and nerfstudio's
    transforms.json (+ sparse_pc.ply), and images_2/, images_4/, ... with --downscales. Works with any
    COLMAP model, also one not made by sfm3r (SIMPLE_RADIAL, RADIAL and OPENCV lenses are undistorted).
    Images of a camera whose principal point is off-centre are cropped (by at most 10 %) so that it is
    centred, as graphdeco 3DGS assumes.
    """
    from sfm3r.pipelines.export import export_model

    written = export_model(
        model, images, out, text=write_text, recursive=recursive, centre_principal_points=not no_crop,
        downscales=downscales or (),
    )  # fmt: skip
    click.echo(f"Wrote {written}")


def _claim_in_run_folder(run_folder: Path, path: Path) -> None:
    """List `path` in the run folder's written-files manifest before writing it (refused if a file of the
    user's is there): the run folder keeps knowing what sfm3r wrote (`--overwrite` deletes it too)."""
    from sfm3r.pipelines.output_manifest import MANIFEST_NAME, OutputManifest

    if (run_folder / MANIFEST_NAME).is_file():
        manifest = OutputManifest(run_folder)
        manifest.load()
        manifest.claim([path])


@cli.command()
@click.argument("estimate", type=EXISTING_DIR)
@click.argument("ground_truth", type=EXISTING_DIR)
@click.option("--json", "json_path", type=OUT_DIR, default=None,
              help="Write the metrics as JSON here [default: ESTIMATE/evaluation.json for a run folder].")
def evaluate(estimate: Path, ground_truth: Path, json_path: Path | None) -> None:
    """Compare the COLMAP model ESTIMATE with GROUND_TRUTH (images matched by name).

    Either argument may be a model folder (cameras/images/points3D) or a run folder holding sparse/0.
    Prints registration rate, RRA/RTA@5/15, mAA@30, AUC@3/5/10 of pairwise relative poses, ATE and focal error.
    """
    from sfm3r.cli.report import print_metrics
    from sfm3r.pipelines.evaluate import evaluate_models, metric_rows

    if json_path is None and (estimate / "run.json").is_file() and (estimate / "sparse" / "0").is_dir():
        json_path = estimate / "evaluation.json"
        _claim_in_run_folder(estimate, json_path)
    metrics = evaluate_models(estimate, ground_truth, json_path)
    print_metrics(metric_rows(metrics))
    if json_path is not None:
        click.echo(f"Metrics written to {json_path}")


@cli.command()
@click.argument("model", type=EXISTING_DIR)
def info(model: Path) -> None:
    """Summarise a COLMAP model (or a run folder holding sparse/0): cameras with their parameters, each
    image's registration and observations, and the track-length histogram."""
    from sfm3r.cli.report import print_model_stats
    from sfm3r.pipelines.inspect import model_stats

    print_model_stats(model_stats(model))


from sfm3r.cli.view import view  # noqa: E402  (its module imports viser only when run)

cli.add_command(view)


def main() -> None:
    """The console script: the command, then the end of the process without the interpreter's teardown."""
    try:
        cli()
    except SystemExit as finished:  # click ends every command this way
        _exit_now(finished.code)
    _exit_now(0)


def _exit_now(code: object) -> None:
    """End the process as `sys.exit(code)` would, but skip the interpreter's teardown of its ~1,200 modules
    (pycolmap, scipy, h5py: 0.13 s after a first run, 0.05 s after a cached rerun of 0.45 s). What a normal
    exit does before that teardown still happens: the atexit functions run (logging's flush and close among
    them), then stdout and stderr are flushed. While a non-daemon thread still runs, the normal exit (which
    waits for it) is kept."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)  # CPython's: what the interpreter calls at exit
    if others or run_exit_functions is None:
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # as sys.exit("message") does
        print(code, file=sys.stderr)
        status = 1
    run_exit_functions()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`sfm3r ... | head`): nothing more to deliver
            pass
    os._exit(status)
