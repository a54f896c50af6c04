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
Rerunning into the same folder resumes from `cache/`. `overwrite=True` deletes only the entries above
(never anything else a user may have put in OUT), so pointing OUT at a wrong folder cannot wipe it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfm3r.errors import InputError

_OWNED_ENTRIES = ("images", "sparse", "distorted", "cache", "points.ply", "preview.png", "run.json", "log.txt")


@dataclass(frozen=True)
class RunFolder:
    root: Path

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


def prepare_run_folder(root: Path, overwrite: bool = False) -> RunFolder:
    """Create (or reuse, to resume) the run folder; with `overwrite`, delete what an earlier run wrote."""
    root = Path(root).expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise InputError(f"output path {root} is a file; give a folder (it will be created if missing)")
    if overwrite and root.is_dir():
        for entry in _OWNED_ENTRIES:
            target = root / entry
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
            pass
    except OSError as error:
        raise InputError(
            f"cannot write to the output folder {root} ({error.strerror or error}); choose another folder"
        ) from None
    return RunFolder(root)


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
        if images.is_relative_to(out / entry):
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
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    except OSError as error:
        raise InputError(f"cannot write {path} ({error.strerror or error}); choose another path") from None
