"""The run folder (DESIGN.md §4): where one reconstruction writes everything, and how reruns resume.

```
OUT/
  images/      the input images as the cameras see them (EXIF applied), unique flat names
  sparse/0/    the COLMAP model (binary; text too on request)
  points.ply   coloured points
  preview.png  top view of cameras and points
  cache/       the HDF5 store (io/cache.py), reused by reruns
  run.json     resolved config, versions, per-stage timings and counts
  log.txt      the run log
```
Rerunning into the same folder resumes from `cache/`. What sfm3r writes follows the written-files
contract of :mod:`sfm3r.pipelines.output_manifest`: OUT/sfm3r-manifest.json lists every file written, a
non-empty OUT without it is refused, and `overwrite=True` deletes only the listed files, so pointing OUT
at a wrong folder cannot wipe or overwrite anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfm3r.errors import InputError
from sfm3r.io.atomic import write_text_atomic
from sfm3r.pipelines.output_manifest import OutputManifest, open_output

_OWNED_ENTRIES = ("images", "sparse", "distorted", "cache", "points.ply", "preview.png", "run.json", "log.txt")


@dataclass(frozen=True)
class RunFolder:
    root: Path
    manifest: OutputManifest | None = field(default=None, compare=False, repr=False)

    def claim(self, *paths: Path | Iterable[Path], folder: bool = False) -> None:
        """Record output paths as sfm3r's before writing them (see :meth:`OutputManifest.claim`)."""
        flat: list[Path] = []
        for item in paths:
            flat.extend([item] if isinstance(item, (str, Path)) else item)
        if self.manifest is not None:
            self.manifest.claim(flat, folder=folder)

    @property
    def made_from(self) -> dict[str, object] | None:
        """The manifest's record of what written files were made from (io.export keeps unchanged images);
        :meth:`save_manifest` stores what a writer added. None without a manifest."""
        return self.manifest.made_from if self.manifest is not None else None

    def save_manifest(self) -> None:
        if self.manifest is not None:
            self.manifest.save()

    def remove_owned(self, folder: str) -> int:
        """Delete the files sfm3r wrote inside `folder` of the run folder; returns how many."""
        return self.manifest.delete_owned_under(folder) if self.manifest is not None else 0

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def sparse_dir(self) -> Path:
        return self.root / "sparse" / "0"

    @property
    def ply_path(self) -> Path:
        return self.root / "points.ply"

    @property
    def preview_path(self) -> Path:
        return self.root / "preview.png"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def log_path(self) -> Path:
        return self.root / "log.txt"


def prepare_run_folder(root: Path, overwrite: bool = False, inputs: Sequence[Path] = ()) -> RunFolder:
    """Create (or reuse, to resume) the run folder; with `overwrite`, delete what an earlier run wrote.

    `inputs`: the input folders; no output path may resolve into one of them (symlinks followed).
    The log file is claimed here, as the CLI opens it right after.
    """
    manifest = open_output(Path(root), inputs, overwrite=overwrite)
    run = RunFolder(manifest.root, manifest)
    run.claim(run.log_path)
    return run


def check_separate_from_inputs(root: Path, images_dir: Path, recursive: bool = False) -> None:
    """Refuse an output folder that overlaps the image folder so that photos could be lost or re-read.

    Refused: the images inside one of OUT's own entries (``project/images`` as input and ``project`` as
    OUT: the export writes there and ``--overwrite`` deletes it); OUT equal to the image folder
    (preview.png would be read as a photo next time); OUT inside the image folder with ``recursive``
    (the exported copies would be read as more photos next time).
    """
    out = Path(root).expanduser().resolve()
    images = Path(images_dir).expanduser().resolve()
    fix = "choose an output folder outside the image folder, e.g. a sibling folder"
    for entry in _OWNED_ENTRIES:
        if images.is_relative_to(out / entry) or images.is_relative_to((out / entry).resolve()):
            raise InputError(
                f"the image folder {images} is inside {out / entry}, which sfm3r writes into (and --overwrite "
                f"deletes): {fix}"
            )
    if images == out:
        raise InputError(f"the output folder {out} is the image folder: its outputs would be read as photos; {fix}")
    if recursive and out.is_relative_to(images):
        raise InputError(
            f"the output folder {out} is inside the image folder {images} and --recursive would read its "
            f"images as more photos on the next run; {fix}"
        )


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to `path` through a temporary file and a rename, so a crash never leaves half a file.

    Raises:
        InputError: `path` cannot be written (its folder is missing, a file, or read-only).
    """
    try:
        write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")
    except OSError as error:
        raise InputError(f"cannot write {path} ({error.strerror or error}); choose another path") from None
