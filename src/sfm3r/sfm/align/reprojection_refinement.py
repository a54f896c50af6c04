"""2D refinement (a): the reference's reprojection objective (§7) on anchor depths, focals and poses.

For every kept match (anchor a in image i, anchor b in image j), the world point built from image j's anchor
depth, X_b = Q_j·d_b·K_j⁻¹[x_b, 1] + C_j, is projected into image i and compared with the observed pixel x_a,
and symmetrically. Parameters: per image a rotation increment (3), the centre (3), log focal (one per camera
group, none when fixed) and one log depth per anchor. Robust Cauchy loss in pixels, weighted by match
confidence; Levenberg–Marquardt (the kernel's loop, geometry.lm) with the anchor depths eliminated by a Schur complement (their block of the
normal equations is diagonal), so each step solves a system the size of the camera parameters only.
Gauge: the root pose and one anchor depth of the root are fixed. Principal points (one per camera group)
stay fixed unless ``optimise_pp``.

Scaling (``ReprojectionProblem``): each residual (2 rows) touches two images and one depth. Every image has
an extended block of 9 columns (its pose, its group's log focal and principal point); a residual's camera
Jacobian is 2×18 on its two blocks. The residuals are sorted by image pair and cut into padded segments of
``_WIDTH``, so that JᵀWJ per pair is one matrix product (no per-residual outer products); the depth
elimination Σ_a v_a v_aᵀ / h_a is accumulated the same way over the pairs of (anchor, image) entries of each
anchor. The pair blocks are scattered into one sparse matrix on the free columns (shared group columns sum)
through a plan built once. Time and memory per iteration are linear in the residuals (processed in batches
of ``_BATCH``) plus the camera system, factorised per damping trial by a sparse LU, or by a dense Cholesky
when the image graph predicts that the LU would fill in (retrieval-like graphs). The depth damping only
rescales the Schur term by 1 / (1 + μ) (exact up to the 1e-12 regulariser), so it is formed once per iteration.

Arrays: numpy for a small problem on the CPU, torch otherwise (``geometry.arrays``); on numpy the per-pair
products are one BLAS call per run of a pair's segments and the batches are smaller (``_NUMPY_BATCH``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from sfm3r.sfm.align.block_lm import DENSE_FILL, DENSE_MAX_COLUMNS, dense_solve, image_graph_fill
from sfm3r.sfm.align.canonical import CanonicalData
from sfm3r.sfm.align.step_confs import ReprojectionConf
from sfm3r.sfm.geometry.arrays import Array, Arrays, arrays_for
from sfm3r.sfm.geometry.lm import levenberg_marquardt
from sfm3r.sfm.geometry.projection import perspective_divide
from sfm3r.sfm.geometry.rotation import rotvec_to_rotmat

logger = logging.getLogger(__name__)


# A principal point is refined only for cameras shared by at least this many images (the default of
# ReprojectionConf.min_images_for_pp, which says why).
MIN_IMAGES_FOR_PP = ReprojectionConf().min_images_for_pp
# A point behind (or at) its observer gets this residual (pixels): a bounded Cauchy cost (about 18·δ² at
# δ = 1 px) and weight 0, so a step may move a few outliers behind a camera if that pays off elsewhere. (A
# hard "never more points behind" rule stalled a 200-image ring at 2.1 px RMS: AUC@3 38 instead of 9x.)
BEHIND_PX = 1e4
_MIN_DEPTH = 1e-6  # observer-frame depth (world units) at or below which a point is behind
_MAX_LOG_DEPTH_STEP = 1.0  # largest change of one anchor's log depth per iteration (a factor e)
_BLOCK = 9  # extended camera block of an image: rotation increment, centre, log focal, principal point (x, y)
_BATCH = 1 << 16  # residuals (or Schur rows) per batch, a multiple of _WIDTH: bounds the temporaries (torch)
_NUMPY_BATCH = 1 << 13  # the same on numpy, whose temporaries are faster while they stay in the CPU's cache
_WIDTH = 16  # items per padded segment of one image pair in the batched products
# The camera system is factorised densely (Cholesky) when its sparse LU would fill in most of it (retrieval-like
# graphs: measured at 1,000 images, 6,000 columns, sparse LU 33 s with 97 % fill vs dense Cholesky 3.1 s) and it
# has at most this many columns; rings and sequences stay sparse (57 ms).


@dataclass(frozen=True, eq=False)
class ReprojectionResult:
    rotations: np.ndarray  # (N, 3, 3) cam_from_world
    centres: np.ndarray  # (N, 3)
    depths: np.ndarray  # (A,) world-unit anchor depths
    focal: np.ndarray  # (N,)
    pp: np.ndarray  # (N, 2)
    inlier_matches: np.ndarray  # (K,) bool
    cost_history: tuple[float, ...]
    final_rms_px: float


@dataclass(frozen=True, eq=False)
class ReprojectionParams:
    """Parameters of the 2D refinement: N images, G camera groups, A anchors (float64 numpy or torch)."""

    Q: Array  # (N, 3, 3) world_from_cam rotations
    C: Array  # (N, 3) centres
    logd: Array  # (A,) log anchor depths
    logf: Array  # (G,) log focal of each camera group
    PP: Array  # (N, 2) principal point of each image (that of its group)


@dataclass(frozen=True, eq=False)
class CameraSystem:
    """Normal equations of one LM iteration with the depths eliminated, on the F free camera columns.

    With the weighted Jacobians Jc (cameras), Jd (depths) and residuals r: H = JcᵀWJc, g = JcᵀWr,
    h = diag(JdᵀWJd), g_d = JdᵀWr, v_a = JcᵀWJd[:, a] and, over the free depths, E = Σ_a v_a v_aᵀ / h_a,
    e = Σ_a v_a g_d,a / h_a. The damped step solves (H + μ·diag(H) − E / (1 + μ)) δc = −(g − e / (1 + μ)).
    """

    H: sp.csr_matrix  # (F, F)
    E: sp.csr_matrix  # (F, F), the sparsity of H
    g: np.ndarray  # (F,)
    e: np.ndarray  # (F,)
    h: Array  # (A,)
    g_d: Array  # (A,)
    V: Array  # (M, 9) v_a on the extended block of each (anchor, image) entry


def _padded_segments(pair: np.ndarray, num_pairs: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items sorted by `pair` (M,), laid out in segments of `width` slots, each holding items of one pair only.

    Returns (src (M',) the item in each slot (padding slots repeat the first item of their pair),
    real (M',) bool, seg_pair (M' / width,) the pair of each segment).
    """
    counts = np.bincount(pair, minlength=num_pairs)
    padded = -(-counts // width) * width
    slot_pair = np.repeat(np.arange(num_pairs), padded)
    pos = np.arange(slot_pair.size) - np.concatenate([[0], np.cumsum(padded)[:-1]])[slot_pair]
    real = pos < counts[slot_pair]
    src = np.concatenate([[0], np.cumsum(counts)[:-1]])[slot_pair] + np.where(real, pos, 0)
    return src, real, slot_pair[::width]


def _cross_into(out: Array, a: Array, b: Array) -> None:
    """out[...] = a × b over the last axis (3), a and b broadcast to out; written per component (np.cross is slow)."""
    out[..., 0] = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
    out[..., 1] = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
    out[..., 2] = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


class _BlockScatter:
    """Sums per-image (9, 9) diagonal blocks and per-pair (9, 9) blocks into one CSR matrix of the free columns.

    The extended blocks of two images share their group's columns; duplicates sum (the plan is built once).
    """

    def __init__(self, colmap: np.ndarray, pairs: np.ndarray, free: np.ndarray):
        F = int(free.sum())
        new = np.full(free.size, -1)
        new[free] = np.arange(F)
        cm = new[colmap]  # (N, 9)
        b = colmap.shape[1]
        rd = np.broadcast_to(cm[:, :, None], (cm.shape[0], b, b))
        cd = np.broadcast_to(cm[:, None, :], (cm.shape[0], b, b))
        ro = np.broadcast_to(cm[pairs[:, 0]][:, :, None], (pairs.shape[0], b, b))
        co = np.broadcast_to(cm[pairs[:, 1]][:, None, :], (pairs.shape[0], b, b))
        rows = np.concatenate([rd.ravel(), ro.ravel(), co.ravel()])
        cols = np.concatenate([cd.ravel(), co.ravel(), ro.ravel()])
        self.sel = np.flatnonzero((rows >= 0) & (cols >= 0))
        uniq, self.inv = np.unique(rows[self.sel] * F + cols[self.sel], return_inverse=True)
        self.indices = (uniq % F).astype(np.int32)
        self.indptr = np.searchsorted(uniq // F, np.arange(F + 1)).astype(np.int32)
        self.diag = np.flatnonzero(uniq // F == uniq % F)
        self.F = F

    def data(self, diag_blocks: np.ndarray, pair_blocks: np.ndarray) -> np.ndarray:
        """(N, 9, 9), (P, 9, 9) -> the CSR data (nnz,)."""
        vals = np.concatenate([diag_blocks.ravel(), pair_blocks.ravel(), pair_blocks.ravel()])[self.sel]
        return np.bincount(self.inv.ravel(), weights=vals, minlength=self.indices.size)

    def matrix(self, data: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((data, self.indices, self.indptr), shape=(self.F, self.F))


class ReprojectionProblem:
    """The residuals of the 2D refinement and their depth-reduced normal equations.

    R = 2·K residuals (both directions of the K kept matches), each observer image o seeing the source anchor
    sa of image s, stored sorted by (o, s) in segments of ``_WIDTH`` (padded with zero-weight copies; ``real``
    marks the others), so that each segment has one relative pose and one JᵀWJ block. Columns: 6 per image
    (rotation increment, centre), then a log focal per group, then a principal point (x, y) per group;
    ``free_c`` (ncol,) and ``free_d`` (A,) mark the optimised ones.
    """

    def __init__(
        self,
        canon: CanonicalData,
        keep: np.ndarray,  # (K_all,) bool
        fidx: np.ndarray,  # (N,) camera group of each image
        fixed_focal: np.ndarray,  # (N,) bool
        root: int,
        conf: ReprojectionConf,
        arrays: Arrays,  # the array backend (geometry.arrays)
    ):
        self.arrays = arrays
        xp = arrays.xp
        self.batch = _NUMPY_BATCH if arrays.is_numpy else _BATCH
        N, A = len(canon.image_names), canon.anchor_depth.size
        self.N, self.A = N, A
        self.fidx = fidx = np.asarray(fidx, np.int64)
        self.nf = nf = int(fidx.max()) + 1
        ma, mb = canon.match_a[keep], canon.match_b[keep]
        self.K = ma.size
        obs_anchor, src_anchor = np.concatenate([ma, mb]), np.concatenate([mb, ma])
        o_img, s_img = canon.anchor_image[obs_anchor], canon.anchor_image[src_anchor]
        # internal order: by ordered (observer, source) pair, padded to segments of _WIDTH (padding: weight 0)
        res_key = o_img * N + s_img
        order = np.argsort(res_key, kind="stable")
        pairs_res = np.unique(res_key)
        src, real, res_seg_pair = _padded_segments(np.searchsorted(pairs_res, res_key[order]), pairs_res.size, _WIDTH)
        self.perm = order[src[real]]  # original residual of each real internal one
        take = order[src]
        obs_anchor, src_anchor, o_img, s_img = (x[take] for x in (obs_anchor, src_anchor, o_img, s_img))
        c = np.tile(canon.match_conf[keep], 2)
        c = np.where(real, c[take] / max(c.mean(), 1e-12) if c.size else 0.0, 0.0)
        tt = lambda x: arrays.asarray(x, xp.float64)  # noqa: E731
        ti = lambda x: arrays.asarray(x, xp.int64)  # noqa: E731
        self.c = tt(c)
        self.real = real  # numpy
        self.behind = tt([BEHIND_PX, 0.0])  # the residual of a point behind its observer
        self.eye2 = tt(np.eye(2))
        self.x_obs, self.x_src = tt(canon.anchor_xy[obs_anchor]), tt(canon.anchor_xy[src_anchor])
        self.sa = ti(src_anchor)
        self.R = src_anchor.size  # residuals incl. padding
        # columns and the free ones (as before: root pose, fixed focals, small groups' principal points)
        self.ncol = ncol = 6 * N + 3 * nf
        pcol = 6 * N + nf + 2 * fidx
        colmap = np.concatenate([6 * np.arange(N)[:, None] + np.arange(6), (6 * N + fidx)[:, None],
                                 pcol[:, None], pcol[:, None] + 1], 1)  # (N, 9)
        free_c = np.ones(ncol, bool)
        free_c[6 * root : 6 * root + 6] = False
        free_c[6 * N + fidx[fixed_focal]] = False
        if not conf.optimise_focal:
            free_c[6 * N : 6 * N + nf] = False
        if not conf.optimise_pp:
            free_c[6 * N + nf :] = False
        small = np.flatnonzero(np.bincount(fidx, minlength=nf) < conf.min_images_for_pp)
        free_c[np.concatenate([6 * N + nf + 2 * small, 6 * N + nf + 2 * small + 1])] = False
        free_c[np.concatenate([pcol[fixed_focal], pcol[fixed_focal] + 1])] = False
        free_d = np.ones(A, bool)
        root_anchors = np.flatnonzero(canon.anchor_image == root)
        if root_anchors.size:
            free_d[root_anchors[0]] = False
        self.free_c, self.free_d = free_c, free_d
        self.free_d_t = tt(free_d)
        self.colmap = ti(colmap)
        self.fidx_t = ti(fidx)
        # (anchor, image) entries of the Schur term, sorted by anchor then image
        ent_key, ent_inv = np.unique(
            np.concatenate([src_anchor * N + o_img, src_anchor * N + s_img]), return_inverse=True
        )
        ent_inv = ent_inv.ravel()
        ent_anchor, ent_img = ent_key // N, ent_key % N
        e_o, e_s = ent_inv[: o_img.size], ent_inv[o_img.size :]  # the entries of each residual's two images
        M = ent_key.size  # entry M (zero) pads the Schur rows
        self.ent_anchor, self.ent_img = ti(np.append(ent_anchor, 0)), ti(np.append(ent_img, 0))
        self.num_entries = M + 1
        # each batch's scatter of JᵀWJ_d (observer then source halves) into V, planned once
        self.v_scatter = [arrays.scatter_plan(np.concatenate([e_o[k : k + self.batch], e_s[k : k + self.batch]]))
                          for k in range(0, self.R, self.batch)]  # fmt: skip
        # pairs of entries of one anchor (their images are increasing): the rows of the Schur term
        n_a = np.bincount(ent_anchor, minlength=A)
        first = np.concatenate([[0], np.cumsum(n_a)[:-1]])
        ei, ej = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for n in np.unique(n_a[n_a >= 2]):
            iu, ju = np.triu_indices(int(n), 1)
            st = first[n_a == n][:, None]
            ei.append((st + iu).ravel())
            ej.append((st + ju).ravel())
        ei, ej = np.concatenate(ei), np.concatenate(ej)
        s_key = ent_img[ei] * N + ent_img[ej]
        # all image pairs: ordered residual pairs (observer, source) and Schur pairs (lower, higher image)
        self.pairs_key = pk = np.unique(np.concatenate([s_key, pairs_res]))
        pairs = np.stack([pk // N, pk % N], 1)
        self.res_seg_pair = ti(np.searchsorted(pk, pairs_res)[res_seg_pair])
        s_pair = np.searchsorted(pk, s_key)
        order = np.argsort(s_pair, kind="stable")
        src, sreal, s_seg_pair = _padded_segments(s_pair[order], pk.size, _WIDTH)
        ei, ej = np.where(sreal, ei[order][src], M), np.where(sreal, ej[order][src], M)
        self.ei, self.ej, self.s_seg_pair = ti(ei), ti(ej), ti(s_seg_pair)  # Schur rows, sorted by pair
        self.row_scale = tt(np.where(sreal, 1.0 / (n_a[np.append(ent_anchor, 0)[ei]] - 1).clip(1), 0.0))
        self.pair_a, self.pair_b = ti(pairs[:, 0]), ti(pairs[:, 1])
        self.seg_o, self.seg_s = self.pair_a[self.res_seg_pair], self.pair_b[self.res_seg_pair]  # (R / _WIDTH,)
        self.scatter = _BlockScatter(colmap, pairs, free_c)
        self.colmap_np = colmap
        self.dense_solve = self.scatter.F <= DENSE_MAX_COLUMNS and image_graph_fill(pairs, N) > DENSE_FILL

    def initial_params(self, rotations, centres, depths, focal, pp) -> ReprojectionParams:
        tt = lambda x: self.arrays.asarray(x, self.arrays.xp.float64)  # noqa: E731
        first_of_group = np.full(self.nf, -1)
        first_of_group[self.fidx[::-1]] = np.arange(self.N)[::-1]
        return ReprojectionParams(Q=tt(np.transpose(rotations, (0, 2, 1))), C=tt(centres), logd=tt(np.log(depths)),
                        logf=tt(np.log(focal[first_of_group])), PP=tt(pp))

    def _project(self, prm: ReprojectionParams, s: slice):
        """Geometry of the residuals `s` (whole segments), as (n segments, _WIDTH, ...): (r, z, intermediates).

        All residuals of a segment share their observer o and source image s: y = Rrel·p + t with
        Rrel = Q_oᵀQ_s, t = Q_oᵀ(C_s − C_o) and p = d·[(x − pp_s) / f_s, 1] in the source camera.
        """
        W, xp = _WIDTH, self.arrays.xp
        seg = slice(s.start // W, min(s.stop, self.R) // W)
        so, ss = self.seg_o[seg], self.seg_s[seg]
        n = so.shape[0]
        f = xp.exp(prm.logf)
        fo, fs = f[self.fidx_t[so]], f[self.fidx_t[ss]]
        Qo_t, Qs = prm.Q[so].mT, prm.Q[ss]
        Rrel = Qo_t @ Qs
        dC = prm.C[ss] - prm.C[so]
        trel = (Qo_t @ dC[..., None])[..., 0]
        xs = (self.x_src[s].reshape(n, W, 2) - prm.PP[ss][:, None]) / fs[:, None, None]
        dep = xp.exp(prm.logd[self.sa[s]]).reshape(n, W)
        p = xp.concatenate([dep[..., None] * xs, dep[..., None]], axis=2)  # d·[xs, 1]
        y = p @ Rrel.mT + trel[:, None]
        uv, z = perspective_divide(y, min_depth=1e-9)
        r = fo[:, None, None] * uv + prm.PP[so][:, None] - self.x_obs[s].reshape(n, W, 2)
        # a point behind (or at) its observer has no projection: a fixed, large residual (see BEHIND_PX)
        r = xp.where((z <= _MIN_DEPTH)[..., None], self.behind, r)
        return r, z, (fo, fs, dep, p, Qo_t, Qs, Rrel, dC, uv)

    def residuals(self, prm: ReprojectionParams) -> tuple[Array, Array]:
        """(r (R, 2) pixels, z (R,) clamped depth in the observer) in the internal residual order."""
        xp = self.arrays.xp
        out = [self._project(prm, slice(k, k + self.batch))[:2] for k in range(0, self.R, self.batch)]
        if not out:
            return self.arrays.zeros(0, 2), self.arrays.zeros(0)
        return (xp.concatenate([o[0].reshape(-1, 2) for o in out]),
                xp.concatenate([o[1].reshape(-1) for o in out]))  # fmt: skip

    def weights(self, r: Array, delta2: float) -> Array:
        """(R,) confidence × Cauchy IRLS weight; 0 for points behind their observer (constant cost)."""
        sq = (r * r).sum(1)
        return self.arrays.xp.where(sq >= BEHIND_PX**2, 0.0, self.c / (1 + sq / delta2))

    def cost(self, r: Array, delta2: float) -> float:
        return float((self.c * delta2 * self.arrays.xp.log1p((r * r).sum(1) / delta2)).sum())

    def _jacobians(self, prm: ReprojectionParams, s: slice) -> tuple[Array, Array]:
        """Jacobians of the residuals `s` on their two extended blocks.

        Returns (J (b, 2, 18): observer block then source block, J_d (b, 2)).
        """
        _, z, (fo, fs, dep, p, Qo_t, Qs, Rrel, dC, uv) = self._project(prm, s)
        n, W = z.shape
        a = (fo[:, None] / z)[..., None, None]
        # d proj / d X (world) and d proj / d p (source camera): rows (f/z)·(q_k − (y_k / z)·q_2)
        D = a * (Qo_t[:, None, :2] - uv[..., None] * Qo_t[:, None, 2:3])  # (n, W, 2, 3)
        Dp = a * (Rrel[:, None, :2] - uv[..., None] * Rrel[:, None, 2:3])
        qp = p @ Qs.mT  # source ray in world axes
        J = self.arrays.zeros(n, W, 2, 2 * _BLOCK)
        _cross_into(J[..., 0:3], D, (qp + dC[:, None])[..., None, :])
        J[..., 3:6] = -D
        J[..., 6] = fo[:, None, None] * uv  # d proj / d log f_o
        J[..., 7:9] = self.eye2  # observer principal point
        _cross_into(J[..., 9:12], qp[..., None, :], D)
        J[..., 12:15] = D
        J[..., 16:18] = Dp[..., :2] * (-dep / fs[:, None])[..., None, None]  # source principal point
        in_plane = Dp[..., 0] * p[..., None, 0] + Dp[..., 1] * p[..., None, 1]
        J[..., 15] = -in_plane  # d / d log f_s
        J_d = in_plane + Dp[..., 2] * p[..., None, 2]  # d / d log depth
        return J.reshape(n * W, 2, 2 * _BLOCK), J_d.reshape(n * W, 2)

    def system(self, prm: ReprojectionParams, r: Array, delta2: float) -> CameraSystem:
        """The depth-reduced normal equations at `prm` (r: its residuals)."""
        arrays, xp = self.arrays, self.arrays.xp
        N, A, P, B, W = self.N, self.A, self.pairs_key.size, _BLOCK, _WIDTH
        sw = xp.sqrt(self.weights(r, delta2))
        blocks = arrays.zeros(P, 2 * B, 2 * B)
        g_pair = arrays.zeros(P, 2 * B, 1)
        h = arrays.zeros(A)
        g_d = arrays.zeros(A)
        V = arrays.zeros(self.num_entries, B)  # v_a on the block of each (anchor, image)
        for k in range(0, self.R, self.batch):  # the batch is a multiple of _WIDTH: whole segments
            s = slice(k, k + self.batch)
            rs = r[s] * sw[s, None]
            J, J_d = self._jacobians(prm, s)
            J *= sw[s, None, None]
            J_d *= sw[s, None]
            unused = sw[s] <= 0  # zero weight (points behind): their Jacobians may have been inf
            if bool(unused.any()):
                J[unused], J_d[unused] = 0.0, 0.0
            X = J.reshape(-1, 2 * W, 2 * B)
            seg = self.res_seg_pair[k // W : (k + rs.shape[0]) // W]
            arrays.segment_products(blocks, seg, X, X)
            arrays.segment_products(g_pair, seg, X, rs.reshape(-1, 2 * W, 1))
            arrays.index_add(h, self.sa[s], J_d[:, 0] * J_d[:, 0] + J_d[:, 1] * J_d[:, 1])
            arrays.index_add(g_d, self.sa[s], J_d[:, 0] * rs[:, 0] + J_d[:, 1] * rs[:, 1])
            u = J[:, 0] * J_d[:, :1] + J[:, 1] * J_d[:, 1:]  # (b, 18) JᵀWJ_d
            self.v_scatter[k // self.batch].add(V, xp.concatenate([u[:, :B], u[:, B:]]))
        inv_h = self.free_d_t / (h + 1e-12)
        sblocks = arrays.zeros(P, 2 * B, 2 * B)
        for k in range(0, self.ei.shape[0], self.batch):
            s = slice(k, k + self.batch)
            vi, vj = V[self.ei[s]], V[self.ej[s]]
            sc, ih = self.row_scale[s][:, None], inv_h[self.ent_anchor[self.ei[s]]][:, None]
            # Σ over the entry pairs of an anchor gives v_i v_jᵀ / h once per pair and v_i v_iᵀ / h once per entry
            x = xp.concatenate([vi, vj * sc], axis=1).reshape(-1, W, 2 * B)
            y = xp.concatenate([vi * (sc * ih), vj * ih], axis=1).reshape(-1, W, 2 * B)
            arrays.segment_products(sblocks, self.s_seg_pair[k // W : (k + vi.shape[0]) // W], x, y)
        g_pair = g_pair[..., 0]
        g_ext = arrays.zeros(N, B)
        arrays.index_add(g_ext, self.pair_a, g_pair[:, :B])
        arrays.index_add(g_ext, self.pair_b, g_pair[:, B:])
        e_ext = arrays.zeros(N, B)
        arrays.index_add(e_ext, self.ent_img, V * (g_d * inv_h)[self.ent_anchor][:, None])
        H = self._assemble(blocks)
        E = self._assemble(sblocks)
        return CameraSystem(H=H, E=E, g=self._vector(g_ext), e=self._vector(e_ext), h=h, g_d=g_d, V=V)

    def _assemble(self, blocks: Array) -> sp.csr_matrix:
        B, arrays = _BLOCK, self.arrays
        diag = arrays.zeros(self.N, B, B)
        arrays.index_add(diag, self.pair_a, blocks[:, :B, :B])
        arrays.index_add(diag, self.pair_b, blocks[:, B:, B:])
        return self.scatter.matrix(self.scatter.data(arrays.to_numpy(diag), arrays.to_numpy(blocks[:, :B, B:])))

    def _vector(self, ext: Array) -> np.ndarray:
        full = np.bincount(self.colmap_np.ravel(), weights=self.arrays.to_numpy(ext).ravel(), minlength=self.ncol)
        return full[self.free_c]

    def _dense_solve(self, S: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """S⁻¹ rhs by Cholesky, or by LU when S is not numerically positive definite; RuntimeError if singular."""
        if self.arrays.is_numpy:
            return dense_solve(S, rhs)  # LinAlgError when singular: a failed trial (geometry.lm)
        torch = self.arrays.xp
        Sd, rt = self.arrays.asarray(S), self.arrays.asarray(rhs)[:, None]
        L, info = torch.linalg.cholesky_ex(Sd)
        dct = torch.cholesky_solve(rt, L) if int(info) == 0 else torch.linalg.solve(Sd, rt)
        return dct[:, 0].cpu().numpy()

    def solve(self, system: CameraSystem, mu: float) -> tuple[np.ndarray, Array]:
        """Damped step: (camera increments (ncol,), fixed columns 0; log-depth increments (A,)).

        Raises RuntimeError when the reduced system is singular.
        """
        H, E = system.H, system.E
        data = H.data - E.data / (1 + mu)
        data[self.scatter.diag] += mu * H.data[self.scatter.diag] + 1e-12
        S = self.scatter.matrix(data)
        rhs = -(system.g - system.e / (1 + mu))
        if self.dense_solve:
            dc = self._dense_solve(S.toarray(), rhs)
            if not np.isfinite(dc).all():
                raise RuntimeError("singular camera system")
        else:
            dc = spla.splu(S.tocsc()).solve(rhs)
        full_c = np.zeros(self.ncol)
        full_c[self.free_c] = dc
        dc_ext = self.arrays.asarray(full_c)[self.colmap]  # (N, 9)
        q = self.arrays.zeros(self.A)
        self.arrays.index_add(q, self.ent_anchor, (system.V * dc_ext[self.ent_img]).sum(1))
        ddep = (-system.g_d - q) / (system.h * (1 + mu) + 1e-12) * self.free_d_t
        return full_c, ddep

    def step(self, prm: ReprojectionParams, full_c: Array, full_d: Array) -> ReprojectionParams:
        """Apply increments (ncol,), (A,) (arrays of the backend; with torch, differentiable)."""
        N, nf = self.N, self.nf
        dpose = full_c[: 6 * N].reshape(N, 6)
        return ReprojectionParams(
            Q=rotvec_to_rotmat(dpose[:, :3]) @ prm.Q,
            C=prm.C + dpose[:, 3:],
            logd=prm.logd + full_d,
            logf=prm.logf + full_c[6 * N : 6 * N + nf],
            PP=prm.PP + full_c[6 * N + nf :].reshape(nf, 2)[self.fidx_t],
        )

    def match_errors(self, r: Array) -> np.ndarray:
        """(2K,) reprojection error of each residual in the caller's order (K observed in image i, then j)."""
        err = np.empty(2 * self.K)
        err[self.perm] = np.linalg.norm(self.arrays.to_numpy(r)[self.real], axis=1)
        return err


def refine_reprojection(
    canon: CanonicalData,
    rotations: np.ndarray,  # (N, 3, 3) cam_from_world
    centres: np.ndarray,  # (N, 3)
    depths: np.ndarray,  # (A,) world units
    focal: np.ndarray,  # (N,)
    pp: np.ndarray,  # (N, 2)
    keep: np.ndarray,  # (K,) bool matches to use
    fixed_focal: np.ndarray,  # (N,) bool
    root: int,
    conf: ReprojectionConf,
    *,
    groups: np.ndarray | None = None,  # (N,) camera group of each image (shared intrinsics); None: per image
    device: str = "cpu",  # "cpu", or a torch device (e.g. "cuda")
    on_iteration: Callable[[int, int, float], None] | None = None,  # (iteration, max_iters, cost) per step
) -> ReprojectionResult:
    """Minimise the symmetric reprojection error of the kept matches.

    On the CPU a problem of at most NUMPY_MAX_MATCHES kept matches runs on numpy, a larger one on torch
    (geometry.arrays).
    """
    N = len(canon.image_names)
    fidx = np.arange(N) if groups is None else np.asarray(groups, np.int64)
    arrays = arrays_for(device, int(np.count_nonzero(keep)))
    prob = ReprojectionProblem(canon, keep, fidx, fixed_focal, root, conf, arrays)
    prm = prob.initial_params(rotations, centres, depths, focal, pp)
    robust = {"scale_px": max(conf.initial_robust_scale_px, conf.robust_scale_px)}  # annealed in place

    def delta2() -> float:
        return robust["scale_px"] ** 2

    def reweight(state):
        """Halve the robust scale down to its final value; the cost of `state` under the new one."""
        if robust["scale_px"] <= conf.robust_scale_px:
            return None
        robust["scale_px"] = max(robust["scale_px"] / 2, conf.robust_scale_px)
        return prob.cost(state[1], delta2())

    def update(state, step):
        full_c, full_d = step
        # an anchor seen at almost no parallax has a near-zero depth curvature: bound its step
        full_d = full_d.clip(-_MAX_LOG_DEPTH_STEP, _MAX_LOG_DEPTH_STEP)
        prm_n = prob.step(state[0], arrays.asarray(full_c), full_d)
        rn, _ = prob.residuals(prm_n)
        return (prm_n, rn), prob.cost(rn, delta2())

    scene_depth = float(np.median(depths)) if depths.size else 1.0
    min_focal = float(np.min(focal))

    def small_step(step) -> bool:
        """No camera moved by more than conf.camera_step_tolerance (see ReprojectionConf)."""
        full_c = step[0]
        pose = full_c[: 6 * N].reshape(N, 6)
        moves = (
            np.linalg.norm(pose[:, :3], axis=1).max(initial=0.0),  # rad
            np.linalg.norm(pose[:, 3:], axis=1).max(initial=0.0) / scene_depth,
            np.abs(full_c[6 * N : 6 * N + prob.nf]).max(initial=0.0),  # log focal
            np.abs(full_c[6 * N + prob.nf :]).max(initial=0.0) / min_focal,  # principal point
        )
        return max(moves) <= conf.camera_step_tolerance

    r, _ = prob.residuals(prm)
    out = levenberg_marquardt(
        (prm, r), prob.cost(r, delta2()),
        linearise=lambda state: prob.system(state[0], state[1], delta2()), solve=prob.solve, update=update,
        max_iters=conf.max_iters, tolerance=conf.tolerance, reweight=reweight, small_step=small_step,
        on_iteration=on_iteration,
    )
    (prm, r), history = out.state, out.cost_history
    err = prob.match_errors(r)
    K = prob.K
    bad = (err[:K] > conf.outlier_px) | (err[K:] > conf.outlier_px)
    inl = keep.copy()
    inl[np.flatnonzero(keep)[bad]] = False
    rms = float(np.sqrt(np.mean(err[np.concatenate([~bad, ~bad])] ** 2))) if (~bad).any() else float("nan")
    logger.info("reprojection refinement: cost %.4g -> %.4g in %d iterations, inlier rms %.3f px",
                history[0], history[-1], len(history) - 1, rms)
    fl = np.exp(arrays.to_numpy(prm.logf))[fidx]
    fl[fixed_focal] = focal[fixed_focal]  # exactly as given (no exp/log round trip)
    return ReprojectionResult(
        rotations=np.transpose(arrays.to_numpy(prm.Q), (0, 2, 1)),
        centres=arrays.to_numpy(prm.C),
        depths=np.exp(arrays.to_numpy(prm.logd)),
        focal=fl,
        pp=arrays.to_numpy(prm.PP),
        inlier_matches=inl,
        cost_history=tuple(history),
        final_rms_px=rms,
    )

