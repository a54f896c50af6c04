"""COLMAP's index matcher (sfm/classic/colmap_matcher.py) against the exact rule, on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sfm3r.sfm.classic.colmap_matcher import match_pairs_colmap
from sfm3r.sfm.classic.sift import SiftConf, extract_sift
from sfm3r.sfm.classic.two_view import (
    MatcherType,
    TwoViewConf,
    match_descriptor_pairs,
    match_descriptors,
)

SAMPLE = Path(__file__).resolve().parents[2] / "sample" / "images"


@pytest.fixture(scope="module")
def descriptors() -> dict[str, np.ndarray]:
    names = sorted(p.name for p in SAMPLE.glob("*.jpg"))[:3]
    conf = SiftConf(max_num_features=2048)  # > 512 per image: COLMAP indexes them (IVF), as on real runs
    return {name: extract_sift(np.asarray(Image.open(SAMPLE / name).convert("RGB")), conf).descriptors for name in names}


def _as_set(matches: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, matches.tolist()))


def test_index_matcher_finds_nearly_the_exact_matches_in_the_asked_orientation(descriptors):
    a, b, c = sorted(descriptors)
    assert min(len(d) for d in descriptors.values()) > 512
    pairs = [(a, b), (c, a), (b, c)]
    found = match_pairs_colmap(descriptors, pairs)
    for (i, j), matches in zip(pairs, found, strict=True):
        exact = _as_set(match_descriptors(descriptors[i], descriptors[j], TwoViewConf(matcher=MatcherType.TORCH)))
        assert len(exact) > 50
        ours = _as_set(matches)
        assert len(ours & exact) >= 0.9 * len(exact) and len(ours - exact) <= 0.1 * len(exact)
        assert np.all(np.diff(matches[:, 0]) > 0)  # sorted by index in i, one match per keypoint
    swapped = match_pairs_colmap(descriptors, [(b, a)])[0]
    assert _as_set(swapped[:, ::-1]) == _as_set(found[0])
    assert all(np.array_equal(x, y) for x, y in zip(found, match_pairs_colmap(descriptors, pairs), strict=True))


def test_batch_and_single_pair_entry_points_agree_and_report_progress(descriptors):
    a, b, c = sorted(descriptors)
    done: list[int] = []
    batch = match_descriptor_pairs(descriptors, [(a, b), (a, c)], TwoViewConf(), on_done=done.append)
    assert done == [2]
    assert np.array_equal(batch[1], match_descriptors(descriptors[a], descriptors[c], TwoViewConf()))
    strict = match_descriptor_pairs(descriptors, [(a, b)], TwoViewConf(max_ratio=0.6))[0]
    assert 0 < len(strict) < len(batch[0])  # the options reach COLMAP's matcher


def test_index_matcher_refuses_descriptors_it_cannot_match():
    with pytest.raises(ValueError, match="uint8"):
        match_pairs_colmap({"a": np.zeros((5, 128), np.float32), "b": np.zeros((5, 128), np.uint8)}, [("a", "b")])
