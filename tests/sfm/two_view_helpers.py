"""Test helper: match many image pairs with the classic two-view stage (tests and benchmarks only).

The pipelines call :func:`sfm3r.sfm.classic.two_view.match_pair` per pair themselves (with caching and
their own progress); this loop serves the tests and ``benchmarks/alignment_real.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import torch

from sfm3r.sfm.classic.sift import SiftFeatures
from sfm3r.sfm.classic.two_view import TwoViewConf, match_pair
from sfm3r.types import Camera, PairResult

__all__ = ["match_pairs"]


def match_pairs(
    pairs: Iterable[tuple[str, str]],
    features: Mapping[str, SiftFeatures],
    priors: Mapping[str, Camera],
    conf: TwoViewConf = TwoViewConf(),
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,  # called with (pairs done, total) after each pair
) -> Iterator[PairResult]:
    """One PairResult per pair, in order, computed lazily (failed pairs included, ``verified=False``).

    Missing features or priors raise KeyError here, before any pair is computed.
    """
    pairs = list(pairs)
    missing = sorted({n for p in pairs for n in p if n not in features or n not in priors})
    if missing:
        raise KeyError(f"no features or camera prior for {missing[:5]} ({len(missing)} images in all)")
    return _iter_pairs(pairs, features, priors, conf, device, progress)


def _iter_pairs(
    pairs: list[tuple[str, str]],
    features: Mapping[str, SiftFeatures],
    priors: Mapping[str, Camera],
    conf: TwoViewConf,
    device: str | torch.device,
    progress: Callable[[int, int], None] | None,
) -> Iterator[PairResult]:
    for k, (name_i, name_j) in enumerate(pairs):
        yield match_pair(
            name_i, name_j, features[name_i], features[name_j], priors[name_i], priors[name_j], conf, device=device
        )
        if progress is not None:
            progress(k + 1, len(pairs))
