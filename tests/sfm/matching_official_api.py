"""Mirrors of the official single-direction matching calls (``fast_reciprocal_NNs``,
``extract_correspondences_nonsym``) on top of :mod:`sfm3r.sfm.mast3r.matching`'s walk engine.

Test code: the pipeline only uses ``symmetric_correspondences``; these mirrors exist to check the engine
against the official fixtures (``shared/fixtures/fast_nn``), bit for bit.
"""

from __future__ import annotations

import torch

from sfm3r.sfm.mast3r.matching import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_MAX_ITER,
    Dist,
    Tensorish,
    _as_tensor,
    _check_conf,
    _check_desc,
    _default_device,
    _grid_seeds,
    _Run,
    _to_xy,
    _unique_pairs,
    _walk_runs,
)

__all__ = ["fast_reciprocal_nns", "fast_reciprocal_nns_idx", "nonsym_correspondences"]


def _explicit_seeds(seeds_xy: Tensorish, height: int, width: int, device: torch.device) -> torch.Tensor:
    """(N, 2) integer (x, y) seeds -> sorted unique flat indices (int64)."""
    xy = torch.as_tensor(seeds_xy, device=device)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"seeds_xy must be (N, 2) integer (x, y) pixels, got shape {tuple(xy.shape)}")
    if xy.is_floating_point():
        raise ValueError("seeds_xy must hold integer pixel indices (x, y); round them first")
    xy = xy.long()
    outside = (xy[:, 0] < 0) | (xy[:, 0] >= width) | (xy[:, 1] < 0) | (xy[:, 1] >= height)
    if bool(outside.any()):
        raise ValueError(f"seeds_xy has pixels outside the {width}x{height} (W x H) descriptor map")
    return torch.unique(xy[:, 0] + width * xy[:, 1])



def fast_reciprocal_nns_idx(
    desc_a: Tensorish,  # (H1, W1, D) descriptors of image A
    desc_b: Tensorish,  # (H2, W2, D) descriptors of image B
    *,
    subsample: int = 8,
    seeds_xy: Tensorish | None = None,  # (N, 2) integer (x, y) pixels of A, or None for the grid
    pixel_tol: float = 0.0,
    max_iter: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    dist: Dist | str = Dist.DOT,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reciprocal nearest neighbours of A's seed pixels, as flat network pixel indices.

    Seeds: the centres of A's ``subsample``-sized cells, or the explicit ``seeds_xy``. Grid seeds walk
    up to ``max_iter`` hop pairs (default 10); explicit seeds make one hop pair (default 1), as in
    the official code. With ``pixel_tol > 0`` (explicit seeds only), a seed is kept when its walk
    returns strictly within ``pixel_tol`` pixels of it, and the *seed* is reported; otherwise the
    walks that converged are kept.

    Returns:
        ``idx_a (M,)``, ``idx_b (M,)`` int64 flat indices ``y * W + x`` into A and B, unique pairs
        sorted by ``idx_a`` then ``idx_b``; on ``device`` (default: the device of ``desc_a``).
    """
    dev = torch.device(device) if device is not None else _default_device(desc_a, desc_b)
    a = _as_tensor(desc_a, dev)
    b = _as_tensor(desc_b, dev)
    _check_desc("desc_a", a)
    _check_desc("desc_b", b)
    if a.shape[2] != b.shape[2]:
        raise ValueError(f"desc_a and desc_b differ in descriptor size: {a.shape[2]} vs {b.shape[2]}")
    h1, w1 = a.shape[:2]
    if seeds_xy is None:
        if pixel_tol > 0:
            raise ValueError("pixel_tol > 0 needs explicit seeds_xy (the official code has the same rule)")
        seeds = _grid_seeds(h1, w1, subsample, dev)
        n_iter = DEFAULT_MAX_ITER if max_iter is None else max_iter
    else:
        seeds = _explicit_seeds(seeds_xy, h1, w1, dev)
        n_iter = 1 if max_iter is None else max_iter
    maps = [a.reshape(-1, a.shape[2]), b.reshape(-1, b.shape[2])]
    _, idx_a, idx_b = _walk_runs(
        maps,
        [_Run(0, 1, seeds, w1)],
        max_iter=n_iter,
        pixel_tol=pixel_tol,
        block_size=block_size,
        dist=Dist(dist),
    )
    ua, ub, _ = _unique_pairs(idx_a, idx_b, maps[1].shape[0])
    return ua, ub


def fast_reciprocal_nns(
    desc_a: Tensorish,  # (H1, W1, D) descriptors of image A
    desc_b: Tensorish,  # (H2, W2, D) descriptors of image B
    *,
    subsample: int = 8,
    seeds_xy: Tensorish | None = None,
    pixel_tol: float = 0.0,
    max_iter: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    dist: Dist | str = Dist.DOT,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fast_reciprocal_nns_idx` with (M, 2) int64 network pixels ``(x, y)`` of A and of B."""
    idx_a, idx_b = fast_reciprocal_nns_idx(
        desc_a,
        desc_b,
        subsample=subsample,
        seeds_xy=seeds_xy,
        pixel_tol=pixel_tol,
        max_iter=max_iter,
        block_size=block_size,
        dist=dist,
        device=device,
    )
    return _to_xy(idx_a, desc_a.shape[1]), _to_xy(idx_b, desc_b.shape[1])


def nonsym_correspondences(
    desc_a: Tensorish,  # (H1, W1, D) image A, from ONE decoder pass A->B
    desc_b: Tensorish,  # (H2, W2, D) image B, same pass
    conf_a: Tensorish,  # (H1, W1) desc_conf of A
    conf_b: Tensorish,  # (H2, W2) desc_conf of B
    *,
    subsample: int = 8,
    pixel_tol: float = 0.0,
    conf_thr: float | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    dist: Dist | str = Dist.DOT,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-pass matching (official ``extract_correspondences_nonsym``): seeds on A and on B.

    Walks A->B (seeds on A's grid) and B->A (seeds on B's grid) are merged; a match's confidence is
    ``min(conf_a, conf_b)`` at its pixels. With ``pixel_tol > 0`` the grid seeds are used as explicit
    seeds with that tolerance. ``conf_thr`` keeps matches with ``conf >= conf_thr`` (the official COLMAP
    path applies this afterwards with 1.001; None keeps all).

    Returns:
        ``xy_a (M, 2)``, ``xy_b (M, 2)`` int64 ``(x, y)`` network pixels, ``conf (M,)`` in the dtype of
        the confidences; sorted by A's flat index then B's.
    """
    dev = torch.device(device) if device is not None else _default_device(desc_a, desc_b)
    a, b = _as_tensor(desc_a, dev), _as_tensor(desc_b, dev)
    ca, cb = _as_tensor(conf_a, dev), _as_tensor(conf_b, dev)
    _check_desc("desc_a", a)
    _check_desc("desc_b", b)
    _check_conf("conf_a", ca, "desc_a", a)
    _check_conf("conf_b", cb, "desc_b", b)
    (h1, w1), (h2, w2) = a.shape[:2], b.shape[:2]
    maps = [a.reshape(-1, a.shape[2]), b.reshape(-1, b.shape[2])]
    runs = [
        _Run(0, 1, _grid_seeds(h1, w1, subsample, dev), w1),
        _Run(1, 0, _grid_seeds(h2, w2, subsample, dev), w2),
    ]
    run_id, p, q = _walk_runs(
        maps,
        runs,
        max_iter=1 if pixel_tol > 0 else DEFAULT_MAX_ITER,
        pixel_tol=pixel_tol,
        block_size=block_size,
        dist=Dist(dist),
    )
    swap = run_id == 1
    idx_a = torch.where(swap, q, p)
    idx_b = torch.where(swap, p, q)
    ua, ub, first = _unique_pairs(idx_a, idx_b, h2 * w2)
    conf = torch.minimum(ca.reshape(-1)[idx_a[first]], cb.reshape(-1)[idx_b[first]])
    if conf_thr is not None:
        keep = conf >= conf_thr
        ua, ub, conf = ua[keep], ub[keep], conf[keep]
    return _to_xy(ua, w1), _to_xy(ub, w2), conf
