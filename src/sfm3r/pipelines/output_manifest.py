"""The written-files contract: sfm3r writes only inside OUT, only files it owns, and lists them.

``OUT/sfm3r-manifest.json`` is written (atomically) before the first output file and lists, relative to
OUT, every file sfm3r writes there and the folders it owns whole (``cache/``); each entry is added
*before* its file is written, so a crash never leaves an unlisted file of ours::

    {"sfm3r_manifest": 1, "files": ["log.txt", "images/0001.jpg", ...], "folders": ["cache"],
     "made_from": {"images/0001.jpg": {"recipe": "<sha256>", "size": 153139, "mtime_ns": ...}}}

``made_from`` (optional) holds, for listed files whose writer records it, what the file was made from and
its size and mtime when written (the 3DGS export's images: ``io.export.WrittenFile``), so that a rerun
keeps a file it would write identically. Entries of files no longer listed are dropped.

Rules (:func:`open_output`):

- OUT missing or empty: created, with a fresh manifest.
- OUT holding a manifest: an earlier run folder; reused (resume). ``overwrite`` deletes exactly the listed
  entries (a listed symlink is unlinked, never followed), then the folders left empty.
- OUT non-empty without a manifest: refused with one line; nothing is touched.
- A path to be written that exists but is not listed (a user's file in OUT/images) is refused.
- Every output path is resolved (symlinks followed at every level, ``OUT/images -> ../photos``) and
  refused if it lands in an input folder, or if an input folder lies inside what it would replace.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from sfm3r.errors import InputError

MANIFEST_NAME = "sfm3r-manifest.json"
_FORMAT = 1


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


class OutputManifest:
    """The files and folders sfm3r owns in one output folder `root` (see the module docstring)."""

    def __init__(self, root: Path, inputs: Sequence[Path] = ()) -> None:
        self.root = Path(root).expanduser().absolute()
        self.inputs = [Path(p).expanduser().resolve() for p in inputs]  # real paths of the input folders
        self.path = self.root / MANIFEST_NAME
        self.files: set[str] = set()
        self.folders: set[str] = set()
        self.made_from: dict[str, object] = {}  # listed file -> its writer's record (opaque here)

    # --- reading and writing the manifest itself
    def load(self) -> None:
        try:
            content = json.loads(self.path.read_text())
            files, folders = content["files"], content["folders"]
            if not isinstance(files, list) or not isinstance(folders, list):
                raise ValueError("files/folders are not lists")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(
                f"{self.path} is unreadable ({error}); it lists what sfm3r wrote in {self.root}: restore it, or "
                "delete the folder yourself and rerun"
            ) from None
        self.files = {str(f) for f in files if _safe_relative(str(f))}
        self.folders = {str(f) for f in folders if _safe_relative(str(f))}
        made_from = content.get("made_from")
        self.made_from = dict(made_from) if isinstance(made_from, dict) else {}  # a writer checks each entry

    def save(self) -> None:
        """Write the manifest through a temp file, fsync and a rename (never half a manifest)."""
        payload = {
            "sfm3r_manifest": _FORMAT, "files": sorted(self.files), "folders": sorted(self.folders),
            "made_from": {rel: self.made_from[rel] for rel in sorted(self.made_from) if rel in self.files},
        }  # fmt: skip
        tmp = self.root / f".{MANIFEST_NAME}.tmp"
        try:
            with open(tmp, "w") as handle:
                handle.write(json.dumps(payload, indent=1) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # --- claims
    def owns(self, path: Path) -> bool:
        rel = self._relative(path)
        return rel in self.files or any(_inside(Path(rel), Path(folder)) for folder in self.folders)

    def claim(self, paths: Iterable[Path], *, folder: bool = False) -> None:
        """Record `paths` (inside OUT) as sfm3r's before they are written.

        Raises:
            InputError: a path resolves into an input folder, or exists and was not written by sfm3r.
        """
        new = []
        for path in paths:
            rel = self._relative(path)
            self.check_not_input(self.root / rel)
            if self.owns(self.root / rel):
                continue
            target = self.root / rel
            if target.exists() or target.is_symlink():
                raise InputError(
                    f"{target} exists and was not written by sfm3r (it is not in {self.path}); refusing to replace "
                    "it: move it away or choose another output folder"
                )
            new.append(rel)
        if new:
            (self.folders if folder else self.files).update(new)
            self.save()

    def check_not_input(self, path: Path) -> None:
        """Refuse an output path whose real location is (or is inside, or holds) an input folder."""
        real = Path(os.path.realpath(path))
        real_root = Path(os.path.realpath(self.root))
        for folder in self.inputs:
            lands_in_input = _inside(real, folder) and not (
                _inside(real, real_root) and real_root != folder and real_root.is_relative_to(folder)
            )  # OUT nested in an input folder (without --recursive) writes only below OUT: allowed
            if lands_in_input or folder.is_relative_to(real):
                via = "" if real == path else f" (it resolves to {real})"
                raise InputError(
                    f"the output path {path}{via} is or holds the input folder {folder}: sfm3r would overwrite "
                    "or delete your files there; choose an output folder outside the input folders, with no "
                    "symlink into them"
                )

    # --- deleting what we wrote
    def delete_owned(self) -> None:
        """Delete every listed file and folder (symlinks unlinked, not followed), then empty parents."""
        parents: set[Path] = set()
        for rel in sorted(self.folders) + sorted(self.files):
            target = self.root / rel
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)
            parents.update(p for p in (self.root / rel).parents if _inside(p, self.root) and p != self.root)
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            try:
                parent.rmdir()  # only when empty: a user's file inside keeps its folder
            except OSError:
                pass
        self.files.clear()
        self.folders.clear()
        self.made_from.clear()
        self.save()

    def delete_owned_under(self, folder: str) -> int:
        """Delete the listed files inside OUT/`folder` (what the user put there stays); returns how many."""
        prefix = folder.strip("/") + "/"
        return self.delete_owned_files(rel for rel in self.files if rel.startswith(prefix))

    def delete_owned_files(self, rels: Iterable[str]) -> int:
        """Delete these files (relative to OUT, as listed; unlisted ones are left alone), then the folders
        they leave empty; returns how many were listed."""
        doomed = sorted(set(rels) & self.files)
        for rel in doomed:
            target = self.root / rel
            if target.is_symlink() or target.is_file():
                target.unlink()
            self.files.discard(rel)
        if doomed:
            self.save()
            for parent in sorted({(self.root / rel).parent for rel in doomed}, key=lambda p: len(p.parts), reverse=True):
                while parent != self.root and _inside(parent, self.root):
                    try:
                        parent.rmdir()  # only when empty
                    except OSError:
                        break
                    parent = parent.parent
        return len(doomed)

    def _relative(self, path: Path) -> str:
        path = Path(path)
        absolute = path if path.is_absolute() else self.root / path
        absolute = Path(os.path.normpath(absolute))
        if not absolute.is_relative_to(self.root) or absolute == self.root:
            raise InputError(f"output path {path} is outside the output folder {self.root}")  # a bug if reached
        return absolute.relative_to(self.root).as_posix()


def _safe_relative(rel: str) -> bool:
    """A manifest entry that stays inside OUT (a tampered manifest must not make us delete elsewhere)."""
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def open_output(root: Path, inputs: Sequence[Path] = (), *, overwrite: bool = False) -> OutputManifest:
    """Create or reuse the output folder `root` under the written-files contract (module docstring).

    Raises:
        InputError: `root` is a file, non-empty without a manifest, or an output path lands in an input folder.
    """
    manifest = OutputManifest(root, inputs)
    root = manifest.root
    if root.exists() and not root.is_dir():
        raise InputError(f"output path {root} is a file; give a folder (it will be created if missing)")
    if Path(os.path.realpath(root)) in manifest.inputs:
        raise InputError(f"the output folder {root} is an input folder; choose an output folder outside the input folders")
    if manifest.path.is_file():
        manifest.load()
        for rel in sorted(manifest.folders | manifest.files):
            manifest.check_not_input(root / rel)
        for entry in root.iterdir():  # e.g. a symlink OUT/images -> ../photos made after the run
            if entry.is_symlink():
                manifest.check_not_input(entry)
        if overwrite:
            manifest.delete_owned()
        return manifest
    if root.is_dir():
        entries = sorted(p.name for p in root.iterdir() if p.name != f".{MANIFEST_NAME}.tmp")
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise InputError(
                f"the output folder {root} is not empty ({shown}) and is not an sfm3r run folder (no {MANIFEST_NAME}); "
                "sfm3r never writes over files it did not write: choose a new or empty folder"
            )
    try:
        root.mkdir(parents=True, exist_ok=True)
        manifest.save()
    except OSError as error:
        raise InputError(
            f"cannot write to the output folder {root} ({error.strerror or error}); choose another folder"
        ) from None
    return manifest
