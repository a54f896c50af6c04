"""Validation first: every option and input file of a run is checked before any image is read.

A mistake in an option (an unknown device, a checkpoint of the wrong network, a NaN focal in the known
intrinsics, a malformed pairs file or scene graph) must cost one line at once, not a traceback or a
misleading message after minutes of work. Checks that need the images (pair names, which image a known
camera belongs to) run as soon as the image list is known, still before any matching.
"""

from __future__ import annotations

import re
from pathlib import Path

from sfm3r.errors import InputError
from sfm3r.pipelines.config import Backend, ReconstructConf
from sfm3r.pipelines.torch_build import installed_torch_build

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def check_device(device: str) -> str:
    """The device string, checked: auto, cpu, cuda or cuda:N, with CUDA (and device N) present when asked.

    Returns the resolved device ("auto" -> "cuda" when available, else "cpu"). "cpu", and "auto" with a torch
    build without a GPU backend, are resolved without importing torch (a cached rerun never imports it).
    """
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N (e.g. cuda:1)")
    if device == "cpu":
        return device
    build = installed_torch_build()
    if device == "auto" and build is not None and not build.has_gpu_backend:
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise InputError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"numbered 0 to {torch.cuda.device_count() - 1}"
            )
    return device


def _check_readable(path: Path, what: str) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as error:
        raise InputError(f"cannot read the {what} {path} ({error.strerror or error})") from None


def _check_pairs_file(path: Path) -> None:
    """Syntax of a pairs file ('name1 name2' per line); the names are checked against the images later."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read pairs file {path}: {error}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if fields and len(fields) != 2:
            raise InputError(f"{path}:{number}: expected two image names 'name1 name2', got {line.strip()!r}")


def validate_options(images_dir: Path, conf: ReconstructConf) -> str:
    """Check every option of `conf` and its input files; return the resolved device.

    Raises:
        InputError, CheckpointError: the first problem found, as one line naming the option, file and value.
    """
    from sfm3r.pipelines.known_cameras import check_known_intrinsics
    from sfm3r.sfm.graph.scene_graph import parse_graph

    device = check_device(conf.device)
    backend = conf.resolved_backend
    if backend == Backend.MAST3R and conf.checkpoint is None:
        raise InputError("the mast3r backend needs --checkpoint PATH (a MASt3R .pth or .safetensors file)")
    if conf.retrieval_checkpoint is not None and conf.checkpoint is None:
        raise InputError("--retrieval-checkpoint runs on the MASt3R encoder: give --checkpoint too")
    if conf.scene_graph != "auto":
        parse_graph(conf.scene_graph)
    if conf.pairs_file is not None:
        _check_pairs_file(conf.pairs_file)
    if conf.known_intrinsics is not None:
        check_known_intrinsics(conf.known_intrinsics)
    for path, what in ((conf.retrieval_checkpoint, "retrieval checkpoint"), (conf.codebook, "codebook")):
        if path is not None:
            _check_readable(Path(path), what)
    if conf.checkpoint is not None and backend == Backend.MAST3R:
        from sfm3r.sfm.mast3r.checkpoint import check_checkpoint

        check_checkpoint(conf.checkpoint)
    return device
