"""Pairs files: a scene graph as text, one ``name1 name2`` pair per line (the COLMAP / hloc format).

Lines are split on whitespace, so image names must not contain spaces (nor ``#``). ``#`` starts a comment
(whole line or trailing); blank lines are ignored. Reading orients every pair as in
:class:`sfm3r.types.Pairs` (name_i precedes name_j in the image list), drops self pairs and
duplicates (either orientation) with a warning, and sorts pairs by image order; scores are NaN and
the source is ``"file"``. Writing emits the pairs in their stored order with a comment header.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sfm3r.errors import InputError
from sfm3r.io.atomic import write_text_atomic
from sfm3r.types import Pairs

logger = logging.getLogger(__name__)

__all__ = ["read_pairs_file", "write_pairs_file"]


def write_pairs_file(path: str | Path, pairs: Pairs) -> Path:
    """Write ``pairs`` to ``path`` as ``name1 name2`` lines; returns the path.

    Raises:
        InputError: if an image name contains whitespace (the format cannot represent it).
    """
    path = Path(path)
    bad = [n for n in pairs.names if not n or "#" in n or any(c.isspace() for c in n)]
    if bad:
        raise InputError(
            f"cannot write pairs file {path}: image name {bad[0]!r} is empty or contains whitespace or '#'; "
            "rename the image (pairs files separate names by spaces)"
        )
    lines = [f"# sfm3r pairs file: {len(pairs)} pairs over {len(pairs.names)} images, one 'name1 name2' per line"]
    lines += [f"{a} {b}" for a, b in pairs.pairs]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def read_pairs_file(path: str | Path, names: Sequence[str]) -> Pairs:
    """Read a pairs file over the images ``names`` (in input order).

    Raises:
        InputError: the file is missing or unreadable, a line does not hold exactly two names, or a
            name is not one of ``names`` (the message gives the line number).
    """
    path = Path(path)
    names = tuple(names)
    index = {n: i for i, n in enumerate(names)}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read pairs file {path}: {e}") from e
    chosen: set[tuple[int, int]] = set()
    num_self = num_dup = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise InputError(
                f"{path}:{lineno}: expected two image names 'name1 name2', got {len(fields)} field(s): {raw.strip()!r}"
            )
        unknown = [f for f in fields if f not in index]
        if unknown:
            raise InputError(
                f"{path}:{lineno}: unknown image {unknown[0]!r} (not among the {len(names)} input images); "
                "names must match the image names exactly, e.g. "
                + ", ".join(repr(n) for n in names[:3])
            )
        i, j = index[fields[0]], index[fields[1]]
        if i == j:
            num_self += 1
            continue
        key = (min(i, j), max(i, j))
        if key in chosen:
            num_dup += 1
            continue
        chosen.add(key)
    if num_self or num_dup:
        logger.warning(
            "pairs file %s: dropped %d self pair(s) and %d duplicate pair(s)", path, num_self, num_dup
        )
    keys = sorted(chosen)
    return Pairs(
        names=names,
        pairs=tuple((names[i], names[j]) for i, j in keys),
        scores=np.full(len(keys), np.nan, np.float32),
        sources=("file",) * len(keys),
    )
