"""One MASt3R pair, both decoder passes -> the pipeline's ``PairResult`` and two ``DenseView``s.

For an unordered pair (i, j) the network runs its decoder twice (MASt3R-SfM §1 step 4):

- pass i->j (i is view 1): ``view1`` holds image i in camera i (``pts3d`` = X_ii, ``conf`` = C_ii,
  ``desc`` = d_ii, ``desc_conf`` = q_ii); ``view2`` holds image j *expressed in camera i*
  (``pts3d_in_other_view`` = X_ji, ``conf`` = C_ji, ``desc`` = d_ji, ``desc_conf`` = q_ji);
- pass j->i: the same with the roles swapped (X_jj, ..., and X_ij in camera j).

Matches come from :func:`sfm3r.sfm.matching.symmetric_correspondences` on the four descriptor maps
(as the official SfM does). Each match carries its 3D point in both cameras: ``pts_i = X_ii`` at the
pixel of i (pass i->j) and ``pts_j = X_jj`` at the pixel of j (pass j->i); the two passes have their own
scale, so ``pts_j ≈ s (R pts_i + t)`` for the relative pose (R, t) and a scale s.

Verification (cheap, 3D only): a RANSAC fit of that similarity ``pts_i -> pts_j`` (3-point Umeyama
hypotheses, inlier if the residual is below ``inlier_thr`` times the point's distance from camera j,
then a confidence-weighted refit on the inliers). The pair is ``verified`` when enough matches agree;
``num_inliers`` counts them, and the fit gives the relative pose estimate. All matches are kept
(the official pipeline weights them by confidence instead of dropping them); alignment decides what
to trust.

Pixels: matches are found at network resolution and converted to original-image pixels (COLMAP
convention) by ``NetView.net_to_original`` only; ``idx_i``/``idx_j`` are flat network pixel indices
``y * W + x``, the per-image keypoint ids shared by all pairs of that image.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sfm3r.sfm.matching import DEFAULT_BLOCK_SIZE, symmetric_correspondences
from sfm3r.types import DenseView, NetView, PairResult

logger = logging.getLogger(__name__)

__all__ = ["BACKEND", "Mast3rPairConf", "Mast3rPairOutput", "fit_sim3_ransac", "mast3r_pair_result"]

BACKEND = "mast3r"

ViewOutput = Mapping[str, torch.Tensor | np.ndarray]
PassOutput = Mapping[str, ViewOutput] | Sequence[ViewOutput]


@dataclass(frozen=True, kw_only=True)
class Mast3rPairConf:
    """How a pair's matches are extracted and checked."""

    subsample: int = 8  # seed grid step of the reciprocal matcher (official: 8)
    block_size: int = DEFAULT_BLOCK_SIZE  # similarity tile edge (memory bound of the matcher)
    ransac_iters: int = 128  # 3-point similarity hypotheses
    inlier_thr: float = 0.05  # inlier if |s R p_i + t - p_j| <= inlier_thr * |p_j| (relative 3D error)
    min_inliers: int = 20  # verified needs at least this many inliers ...
    min_inlier_ratio: float = 0.25  # ... and at least this fraction of the matches
    seed: int = 0  # RANSAC sampling seed (results are deterministic)


@dataclass(frozen=True)
class Mast3rPairOutput:
    """What one pair contributes: sparse matches with 3D points, and each image's own-frame pointmap."""

    pair: PairResult
    dense_i: DenseView  # X_ii, C_ii from pass i->j (camera i)
    dense_j: DenseView  # X_jj, C_jj from pass j->i (camera j)


# ----------------------------------------------------------------------------------------------------
# Input handling


def _split_pass(out: PassOutput, label: str) -> tuple[ViewOutput, ViewOutput]:
    if isinstance(out, Mapping):
        if "view1" not in out or "view2" not in out:
            raise ValueError(f"{label} must have keys 'view1' and 'view2', got {sorted(out)}")
        return out["view1"], out["view2"]
    if isinstance(out, Sequence) and len(out) == 2:
        return out[0], out[1]
    raise ValueError(f"{label} must be {{'view1': ..., 'view2': ...}} or the forward's (res1, res2)")


def _get(view: ViewOutput, keys: Sequence[str], label: str, shape: tuple[int, ...]) -> torch.Tensor:
    for key in keys:
        if key in view:
            value = torch.as_tensor(view[key])
            break
    else:
        raise ValueError(f"{label} lacks '{keys[0]}' (keys present: {sorted(view)})")
    ok = value.ndim == len(shape) and all(s in (-1, v) for s, v in zip(shape, value.shape))
    if not ok:
        want = tuple("D" if s == -1 else s for s in shape)
        hint = " (remove the batch dimension)" if value.ndim == len(shape) + 1 else ""
        raise ValueError(f"{label}['{key}'] must have shape {want}, got {tuple(value.shape)}{hint}")
    return value


def _read_view(view: ViewOutput, label: str, hw: tuple[int, int], points: bool) -> dict:
    """The view's ``desc``/``desc_conf``, and with ``points`` its ``pts3d``/``conf`` (view 2's are unused)."""
    h, w = hw
    out = {}
    if points:
        out["pts3d"] = _get(view, ("pts3d",), label, (h, w, 3))
        out["conf"] = _get(view, ("conf",), label, (h, w))
    out["desc"] = _get(view, ("desc",), label, (h, w, -1))
    out["desc_conf"] = _get(view, ("desc_conf",), label, (h, w))
    return out


def _numpy32(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float32).numpy()


# ----------------------------------------------------------------------------------------------------
# Similarity fit


def _umeyama(src: np.ndarray, dst: np.ndarray, w: np.ndarray):
    """Weighted similarity dst ≈ s R src + t for batches: (B, N, 3), (B, N, 3), (B, N) -> s, R, t."""
    wsum = np.maximum(w.sum(1, keepdims=True), 1e-12)
    mu_s = (w[..., None] * src).sum(1) / wsum
    mu_d = (w[..., None] * dst).sum(1) / wsum
    cs, cd = src - mu_s[:, None], dst - mu_d[:, None]
    cov = np.einsum("bn,bni,bnj->bij", w, cd, cs) / wsum[..., None]
    u, sig, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u @ vt))
    sign[sign == 0] = 1.0
    d = np.ones((len(src), 3))
    d[:, 2] = sign
    rot = u @ (d[..., None] * vt)
    var_s = (w * (cs**2).sum(-1)).sum(1) / wsum[:, 0]
    scale = (sig * d).sum(1) / np.maximum(var_s, 1e-300)
    trans = mu_d - scale[:, None] * np.einsum("bij,bj->bi", rot, mu_s)
    return scale, rot, trans


def _inliers(src, dst, scale, rot, trans, thr):
    pred = scale[:, None, None] * np.einsum("bij,nj->bni", rot, src) + trans[:, None]
    err = np.linalg.norm(pred - dst[None], axis=-1)
    return err <= thr * np.linalg.norm(dst, axis=-1)[None]


def fit_sim3_ransac(
    src: np.ndarray,  # (M, 3) points in frame A
    dst: np.ndarray,  # (M, 3) the same points in frame B
    weights: np.ndarray,  # (M,) > 0, used by the refit
    *,
    iters: int = 128,
    thr: float = 0.05,
    seed: int = 0,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Robust similarity ``dst ≈ s R src + t`` -> (s, R (3, 3), t (3,), inliers (M,) bool), float64.

    Hypotheses from random 3-point samples; the one with most inliers (relative error
    ``|s R src + t - dst| <= thr * |dst|``) is refitted twice on its inliers with ``weights``.
    Needs M >= 3.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    weights = np.asarray(weights, np.float64)
    m = len(src)
    if m < 3:
        raise ValueError(f"a similarity fit needs at least 3 point pairs, got {m}")
    rng = np.random.default_rng(seed)
    sample = np.stack([rng.choice(m, 3, replace=False) for _ in range(iters)])
    scale, rot, trans = _umeyama(src[sample], dst[sample], np.ones(sample.shape))
    inl = _inliers(src, dst, scale, rot, trans, thr)
    best = inl[np.argmax(inl.sum(1))]
    for _ in range(2):
        if best.sum() < 3:
            break
        scale, rot, trans = _umeyama(src[None, best], dst[None, best], weights[None, best])
        best = _inliers(src, dst, scale, rot, trans, thr)[0]
    return float(scale[0]), rot[0], trans[0], best


# ----------------------------------------------------------------------------------------------------
# The pair


def mast3r_pair_result(
    name_i: str,
    name_j: str,
    pass_ij: PassOutput,
    pass_ji: PassOutput,
    view_i: NetView,
    view_j: NetView,
    conf: Mast3rPairConf | None = None,
    *,
    device: torch.device | str | None = None,
) -> Mast3rPairOutput:
    """Matches, 3D points and dense pointmaps of one unordered pair from its two decoder passes.

    Args:
        name_i, name_j: the images (``name_i`` is view 1 of ``pass_ij``).
        pass_ij: decoder pass with i as view 1, batch dimension removed: ``{'view1': {...},
            'view2': {...}}`` or the forward's ``(res1, res2)``. view1 (image i): ``pts3d`` (H_i, W_i, 3),
            ``conf`` (H_i, W_i), ``desc`` (H_i, W_i, D), ``desc_conf`` (H_i, W_i); view2 (image j):
            ``desc`` (H_j, W_j, D), ``desc_conf`` (H_j, W_j) (its ``pts3d_in_other_view`` and ``conf``
            are not used and may be absent: ``PairInference(view2_points=False)``). Tensors (any
            device) or arrays.
        pass_ji: the pass with j as view 1 (same layout, roles swapped).
        view_i, view_j: how the network saw each image; (H, W) must match the outputs.
        conf: matching and verification settings.
        device: where to match (default: the device of the descriptors).

    Returns:
        :class:`Mast3rPairOutput`: the ``PairResult`` (xy in original pixels, ``conf`` = match
        confidence sqrt(q_i q_j), ``pts_i``/``pts_j`` in cameras i/j, verification, relative pose
        ``cam_j_from_cam_i`` at the scale of ``pts_i``) and the ``DenseView``s of i and j.
    """
    conf = conf or Mast3rPairConf()
    hw_i = (view_i.net_height, view_i.net_width)
    hw_j = (view_j.net_height, view_j.net_width)
    v1, v2 = _split_pass(pass_ij, "pass_ij")
    ii = _read_view(v1, "pass_ij view1 (image i)", hw_i, points=True)
    ji = _read_view(v2, "pass_ij view2 (image j)", hw_j, points=False)
    v1, v2 = _split_pass(pass_ji, "pass_ji")
    jj = _read_view(v1, "pass_ji view1 (image j)", hw_j, points=True)
    ij = _read_view(v2, "pass_ji view2 (image i)", hw_i, points=False)

    xy_i, xy_j, match_conf = symmetric_correspondences(
        desc_ii=ii["desc"],
        desc_ji=ji["desc"],
        desc_jj=jj["desc"],
        desc_ij=ij["desc"],
        conf_ii=ii["desc_conf"],
        conf_ji=ji["desc_conf"],
        conf_jj=jj["desc_conf"],
        conf_ij=ij["desc_conf"],
        subsample=conf.subsample,
        block_size=conf.block_size,
        device=device,
    )
    net_xy_i, net_xy_j = xy_i.cpu().numpy(), xy_j.cpu().numpy()
    idx_i = net_xy_i[:, 1] * hw_i[1] + net_xy_i[:, 0]
    idx_j = net_xy_j[:, 1] * hw_j[1] + net_xy_j[:, 0]
    x_ii, x_jj = _numpy32(ii["pts3d"]), _numpy32(jj["pts3d"])
    pts_i = x_ii.reshape(-1, 3)[idx_i]
    pts_j = x_jj.reshape(-1, 3)[idx_j]
    weights = _numpy32(match_conf)

    verified, num_inliers, rel_r, rel_t = False, 0, None, None
    finite = np.isfinite(pts_i).all(1) & np.isfinite(pts_j).all(1)
    if finite.sum() >= 3:
        scale, rot, trans, inl = fit_sim3_ransac(
            pts_i[finite],
            pts_j[finite],
            weights[finite],
            iters=conf.ransac_iters,
            thr=conf.inlier_thr,
            seed=conf.seed,
        )
        num_inliers = int(inl.sum())
        m = len(pts_i)
        verified = num_inliers >= conf.min_inliers and num_inliers >= conf.min_inlier_ratio * m
        if num_inliers >= 3 and scale > 0:
            rel_r, rel_t = rot, trans / scale
    logger.debug(
        "%s-%s: %d matches, %d inliers, verified=%s", name_i, name_j, len(pts_i), num_inliers, verified
    )

    pair = PairResult(
        name_i=name_i,
        name_j=name_j,
        backend=BACKEND,
        xy_i=view_i.net_to_original(net_xy_i).astype(np.float32).reshape(-1, 2),
        xy_j=view_j.net_to_original(net_xy_j).astype(np.float32).reshape(-1, 2),
        idx_i=idx_i.astype(np.int64),
        idx_j=idx_j.astype(np.int64),
        conf=weights,
        pts_i=pts_i,
        pts_j=pts_j,
        verified=bool(verified),
        num_inliers=num_inliers,
        rel_rotation=rel_r,
        rel_translation=rel_t,
    )
    dense_i = DenseView(name=name_i, partner=name_j, net_pts3d=x_ii, net_conf=_numpy32(ii["conf"]))
    dense_j = DenseView(name=name_j, partner=name_i, net_pts3d=x_jj, net_conf=_numpy32(jj["conf"]))
    return Mast3rPairOutput(pair=pair, dense_i=dense_i, dense_j=dense_j)
