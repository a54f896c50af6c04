"""Pairs files: round trip, comments, orientation, duplicates, unknown names."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sfm3r.errors import InputError
from sfm3r.io.pairs_file import read_pairs_file, write_pairs_file
from sfm3r.sfm.graph.scene_graph import make_pairs

NAMES = ["a.jpg", "sub/b.jpg", "c.png", "d.jpg"]


def test_round_trip(tmp_path):
    pairs = make_pairs(NAMES, "swin-2", np.eye(4))
    path = write_pairs_file(tmp_path / "out" / "pairs.txt", pairs)
    back = read_pairs_file(path, NAMES)
    assert back.names == pairs.names
    assert back.pairs == pairs.pairs
    assert back.sources == ("file",) * len(pairs)
    assert np.isnan(back.scores).all()
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    assert lines[0] == "a.jpg sub/b.jpg"


def test_comments_blank_lines_orientation_duplicates_and_self_pairs(tmp_path, caplog):
    path = tmp_path / "pairs.txt"
    path.write_text(
        "# my pairs\n\n"
        "d.jpg a.jpg   # reversed: stored as (a, d)\n"
        "  c.png\tsub/b.jpg\n"
        "a.jpg d.jpg\n"  # duplicate of line 3
        "c.png c.png\n"  # self pair
    )
    with caplog.at_level(logging.WARNING, logger="sfm3r.io.pairs_file"):
        pairs = read_pairs_file(path, NAMES)
    assert pairs.pairs == (("a.jpg", "d.jpg"), ("sub/b.jpg", "c.png"))  # oriented and sorted by input order
    assert "1 self pair(s) and 1 duplicate" in caplog.text


def test_unknown_name_names_the_line(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("a.jpg c.png\n\nb.jpg c.png\n")
    with pytest.raises(InputError, match=r"pairs.txt:3: unknown image 'b.jpg'"):
        read_pairs_file(path, NAMES)


def test_malformed_line_and_missing_file(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("a.jpg c.png d.jpg\n")
    with pytest.raises(InputError, match=r":1: expected two image names"):
        read_pairs_file(path, NAMES)
    with pytest.raises(InputError, match="cannot read pairs file"):
        read_pairs_file(tmp_path / "missing.txt", NAMES)


def test_names_with_spaces_cannot_be_written(tmp_path):
    pairs = make_pairs(["my photo.jpg", "b.jpg"], "complete")
    with pytest.raises(InputError, match="whitespace"):
        write_pairs_file(tmp_path / "p.txt", pairs)


def test_empty_pairs_round_trip(tmp_path):
    pairs = make_pairs(["a.jpg"], "complete")
    back = read_pairs_file(write_pairs_file(tmp_path / "p.txt", pairs), ["a.jpg"])
    assert len(back) == 0
