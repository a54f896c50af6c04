"""Putative SIFT matches of many image pairs at once, through COLMAP's own CPU matcher.

COLMAP's default CPU matcher (``cpu_brute_force_matcher = False``) puts each image's descriptors in a
faiss IVF index (exact search below 512 descriptors), searches the two nearest neighbours of every
descriptor of the other image, and applies the same rule as :func:`two_view.match_descriptors`: mutual
nearest neighbours, ratio test in both directions, maximum descriptor angle. The search is approximate: on
herzjesu (8,192 SIFT per image) it finds 97-99 % of the exact matcher's matches and adds a few of its own,
at about a sixth of the CPU time of the exact torch matcher, and it runs the pairs on every core.

It is reached through a temporary COLMAP database (the only entry point that keeps each image's index
between its pairs): the descriptors are written once, ``pycolmap.match_image_pairs`` matches the listed
pairs without geometric verification, the matches are read back and the database is deleted.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: a cached rerun needs no pycolmap (~0.1 s)
    import pycolmap

__all__ = ["match_pairs_colmap"]

_PAIRS_PER_CALL = 256  # pairs matched per pycolmap call: progress granularity; images are re-indexed per call


def match_pairs_colmap(
    descriptors: Mapping[str, np.ndarray],  # image name -> (N, 128) uint8 SIFT descriptors (COLMAP format)
    pairs: Sequence[tuple[str, str]],  # (name_i, name_j); matches index i's descriptors in column 0
    *,
    max_ratio: float = 0.8,
    max_distance: float = 0.7,
    cross_check: bool = True,
    num_threads: int = -1,  # -1: every core
    on_done: Callable[[int], None] | None = None,  # called with the number of pairs done so far
    scratch_dir: Path | None = None,  # where the temporary database goes (~1 MB per image); None: the system's
) -> list[np.ndarray]:
    """Putative matches of each pair -> list of (M, 2) int64 (index in i, index in j), sorted by index in i."""
    import pycolmap

    names = sorted({name for pair in pairs for name in pair})
    for name in names:
        desc = descriptors[name]
        if desc.dtype != np.uint8 or desc.ndim != 2 or desc.shape[1] != 128:
            raise ValueError(f"COLMAP's matcher needs (N, 128) uint8 SIFT descriptors, got {desc.shape} {desc.dtype}")
    options = pycolmap.FeatureMatchingOptions()
    options.num_threads = num_threads
    options.skip_geometric_verification = True
    options.max_num_matches = max([len(descriptors[n]) for n in names] + [1])
    options.sift.max_ratio = max_ratio
    options.sift.max_distance = max_distance
    options.sift.cross_check = cross_check
    results: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix="sfm3r-match-", dir=scratch_dir) as tmp:
        db_path = Path(tmp) / "matches.db"
        image_id = _write_database(db_path, descriptors, names)
        file_name = {name: f"{k}.jpg" for k, name in enumerate(names)}  # database names: no user text in the list
        for start in range(0, len(pairs), _PAIRS_PER_CALL):
            chunk = pairs[start : start + _PAIRS_PER_CALL]
            pair_list = Path(tmp) / "pairs.txt"
            pair_list.write_text("".join(f"{file_name[a]} {file_name[b]}\n" for a, b in chunk))
            pairing = pycolmap.ImportedPairingOptions()
            pairing.match_list_path = str(pair_list)
            pycolmap.match_image_pairs(
                str(db_path), matching_options=options, pairing_options=pairing, device=pycolmap.Device.cpu
            )
            with pycolmap.Database.open(str(db_path)) as db:
                for a, b in chunk:
                    found = _read_matches(db, image_id[a], image_id[b])
                    results.append(found)
            if on_done is not None:
                on_done(start + len(chunk))
    return results


def _write_database(db_path: Path, descriptors: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, int]:
    """One image per name with its descriptors (keypoints are not used by the matcher: zeros) -> name -> id."""
    import pycolmap

    image_id: dict[str, int] = {}
    with pycolmap.Database.open(str(db_path)) as db:
        camera_id = db.write_camera(pycolmap.Camera(model="SIMPLE_PINHOLE", width=1, height=1, params=[1.0, 0.5, 0.5]))
        for k, name in enumerate(names):
            desc = np.ascontiguousarray(descriptors[name])
            image_id[name] = db.write_image(pycolmap.Image(name=f"{k}.jpg", camera_id=camera_id))
            db.write_keypoints(image_id[name], np.zeros((len(desc), 2), np.float32))
            db.write_descriptors(image_id[name], pycolmap.FeatureDescriptors(pycolmap.FeatureExtractorType.SIFT, desc))
    return image_id


def _read_matches(db: pycolmap.Database, id_i: int, id_j: int) -> np.ndarray:
    """Matches of (i, j) in that orientation, sorted by index in i; none when the pair was not matched."""
    if not db.exists_matches(id_i, id_j):
        return np.zeros((0, 2), np.int64)
    found = np.asarray(db.read_matches(id_i, id_j), np.int64).reshape(-1, 2)
    return found[np.argsort(found[:, 0], kind="stable")]
