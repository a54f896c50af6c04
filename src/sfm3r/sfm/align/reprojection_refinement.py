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
``_WIDTH``, so that JᵀWJ per pair is one batched matrix product (no per-residual outer products); the depth
elimination Σ_a v_a v_aᵀ / h_a is accumulated the same way over the pairs of (anchor, image) entries of each
anchor. The pair blocks are scattered into one sparse matrix on the free columns (shared group columns sum)
through a plan built once. Time and memory per iteration are linear in the residuals (processed in batches
of ``_BATCH``) plus the camera system, factorised per damping trial by a sparse LU, or by a dense Cholesky
when the image graph predicts that the LU would fill in (retrieval-like graphs). The depth damping only
rescales the Schur term by 1 / (1 + μ) (exact up to the 1e-12 regulariser), so it is formed once per iteration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from sfm3r.sfm.align.block_lm import DENSE_FILL, DENSE_MAX_COLUMNS, add_rows, image_graph_fill
from sfm3r.sfm.align.canonical import CanonicalData
from sfm3r.sfm.align.step_confs import ReprojectionConf  # its options live apart from torch (step_confs)
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
_BATCH = 1 << 16  # residuals (or Schur rows) per batch, a multiple of _WIDTH: bounds the temporaries
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
    """Parameters of the 2D refinement: N images, G camera groups, A anchors (float64 tensors)."""

    Q: torch.Tensor  # (N, 3, 3) world_from_cam rotations
    C: torch.Tensor  # (N, 3) centres
    logd: torch.Tensor  # (A,) log anchor depths
    logf: torch.Tensor  # (G,) log focal of each camera group
    PP: torch.Tensor  # (N, 2) principal point of each image (that of its group)


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
    h: torch.Tensor  # (A,)
    g_d: torch.Tensor  # (A,)
    V: torch.Tensor  # (M, 9) v_a on the extended block of each (anchor, image) entry


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
        device: str | torch.device = "cpu",
    ):
        self.device = torch.device(device)
        dt = torch.float64
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
        tt = lambda x, d=dt: torch.as_tensor(np.ascontiguousarray(x), dtype=d, device=self.device)  # noqa: E731
        ti = lambda x: tt(x, torch.int64)  # noqa: E731
        self.c = tt(c)
        self.real = torch.as_tensor(real, device=self.device)
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
        self.e_o, self.e_s = ti(ent_inv[: o_img.size]), ti(ent_inv[o_img.size :])
        M = ent_key.size  # entry M (zero) pads the Schur rows
        self.ent_anchor, self.ent_img = ti(np.append(ent_anchor, 0)), ti(np.append(ent_img, 0))
        self.num_entries = M + 1
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
        self.ei, self.ej, self.s_seg_pair = ti(ei), ti(ej), ti(s_seg_pair)
        self.row_scale = tt(np.where(sreal, 1.0 / (n_a[np.append(ent_anchor, 0)[ei]] - 1).clip(1), 0.0))
        self.pair_a, self.pair_b = ti(pairs[:, 0]), ti(pairs[:, 1])
        self.seg_o, self.seg_s = self.pair_a[self.res_seg_pair], self.pair_b[self.res_seg_pair]  # (R / _WIDTH,)
        self.scatter = _BlockScatter(colmap, pairs, free_c)
        self.colmap_np = colmap
        self.dense_solve = self.scatter.F <= DENSE_MAX_COLUMNS and image_graph_fill(pairs, N) > DENSE_FILL

    def initial_params(self, rotations, centres, depths, focal, pp) -> ReprojectionParams:
        tt = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64, device=self.device)  # noqa: E731
        first_of_group = np.full(self.nf, -1)
        first_of_group[self.fidx[::-1]] = np.arange(self.N)[::-1]
        return ReprojectionParams(Q=tt(np.transpose(rotations, (0, 2, 1))), C=tt(centres), logd=tt(np.log(depths)),
                        logf=tt(np.log(focal[first_of_group])), PP=tt(pp))

    def _project(self, prm: ReprojectionParams, s: slice):
        """Geometry of the residuals `s` (whole segments), as (n segments, _WIDTH, ...): (r, z, intermediates).

        All residuals of a segment share their observer o and source image s: y = Rrel·p + t with
        Rrel = Q_oᵀQ_s, t = Q_oᵀ(C_s − C_o) and p = d·[(x − pp_s) / f_s, 1] in the source camera.
        """
        W = _WIDTH
        seg = slice(s.start // W, min(s.stop, self.R) // W)
        so, ss = self.seg_o[seg], self.seg_s[seg]
        n = so.numel()
        f = torch.exp(prm.logf)
        fo, fs = f[self.fidx_t[so]], f[self.fidx_t[ss]]
        Qo_t, Qs = prm.Q[so].transpose(1, 2), prm.Q[ss]
        Rrel = Qo_t @ Qs
        dC = prm.C[ss] - prm.C[so]
        trel = (Qo_t @ dC[..., None])[..., 0]
        xs = (self.x_src[s].view(n, W, 2) - prm.PP[ss][:, None]) / fs[:, None, None]
        ray = torch.cat([xs, torch.ones_like(xs[..., :1])], 2)
        dep = torch.exp(prm.logd[self.sa[s]]).view(n, W)
        p = dep[..., None] * ray
        y = p @ Rrel.transpose(1, 2) + trel[:, None]
        uv, z = perspective_divide(y, min_depth=1e-9)
        r = fo[:, None, None] * uv + prm.PP[so][:, None] - self.x_obs[s].view(n, W, 2)
        # a point behind (or at) its observer has no projection: a fixed, large residual (see BEHIND_PX)
        r = torch.where((z <= _MIN_DEPTH)[..., None], r.new_tensor([BEHIND_PX, 0.0]), r)
        return r, z, (fo, fs, dep, p, Qo_t, Qs, Rrel, dC, uv)

    def residuals(self, prm: ReprojectionParams) -> tuple[torch.Tensor, torch.Tensor]:
        """(r (R, 2) pixels, z (R,) clamped depth in the observer) in the internal residual order."""
        out = [self._project(prm, slice(k, k + _BATCH))[:2] for k in range(0, self.R, _BATCH)]
        if not out:
            e = self.c.new_zeros(0)
            return e.view(0, 2), e
        return torch.cat([o[0].reshape(-1, 2) for o in out]), torch.cat([o[1].reshape(-1) for o in out])

    def weights(self, r: torch.Tensor, delta2: float) -> torch.Tensor:
        """(R,) confidence × Cauchy IRLS weight; 0 for points behind their observer (constant cost)."""
        sq = (r * r).sum(1)
        return torch.where(sq >= BEHIND_PX**2, 0.0, self.c / (1 + sq / delta2))

    def cost(self, r: torch.Tensor, delta2: float) -> float:
        return float((self.c * delta2 * torch.log1p((r * r).sum(1) / delta2)).sum())

    def _jacobians(self, prm: ReprojectionParams, s: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Jacobians of the residuals `s` on their two extended blocks.

        Returns (J (b, 2, 18): observer block then source block, J_d (b, 2)).
        """
        _, z, (fo, fs, dep, p, Qo_t, Qs, Rrel, dC, uv) = self._project(prm, s)
        n, W = z.shape
        a = (fo[:, None] / z)[..., None, None]
        # d proj / d X (world) and d proj / d p (source camera): rows (f/z)·(q_k − (y_k / z)·q_2)
        D = a * (Qo_t[:, None, :2] - uv[..., None] * Qo_t[:, None, 2:3])  # (n, W, 2, 3)
        Dp = a * (Rrel[:, None, :2] - uv[..., None] * Rrel[:, None, 2:3])
        qp = p @ Qs.transpose(1, 2)  # source ray in world axes
        J = z.new_empty(n, W, 2, 2 * _BLOCK)
        J[..., 0:3] = torch.linalg.cross(D, (qp + dC[:, None])[..., None, :].expand(n, W, 2, 3), dim=-1)
        J[..., 3:6] = -D
        J[..., 6] = fo[:, None, None] * uv  # d proj / d log f_o
        J[..., 7:9] = torch.eye(2, dtype=z.dtype, device=z.device)  # observer principal point
        J[..., 9:12] = torch.linalg.cross(qp[..., None, :].expand(n, W, 2, 3), D, dim=-1)
        J[..., 12:15] = D
        J[..., 15] = -(Dp[..., 0] * p[..., None, 0] + Dp[..., 1] * p[..., None, 1])  # d / d log f_s
        J[..., 16:18] = Dp[..., :2] * (-dep / fs[:, None])[..., None, None]  # source principal point
        J_d = (Dp * p[..., None, :]).sum(-1)
        return J.view(n * W, 2, 2 * _BLOCK), J_d.view(n * W, 2)

    def system(self, prm: ReprojectionParams, r: torch.Tensor, delta2: float) -> CameraSystem:
        """The depth-reduced normal equations at `prm` (r: its residuals)."""
        dev, dt = self.device, r.dtype
        N, A, P, B, W = self.N, self.A, self.pairs_key.size, _BLOCK, _WIDTH
        sw = torch.sqrt(self.weights(r, delta2))
        blocks = torch.zeros(P, 2 * B, 2 * B, dtype=dt, device=dev)
        g_pair = torch.zeros(P, 2 * B, dtype=dt, device=dev)
        h = torch.zeros(A, dtype=dt, device=dev)
        g_d = torch.zeros(A, dtype=dt, device=dev)
        V = torch.zeros(self.num_entries, B, dtype=dt, device=dev)  # v_a on the block of each (anchor, image)
        for k in range(0, self.R, _BATCH):  # _BATCH is a multiple of _WIDTH: whole segments
            s = slice(k, k + _BATCH)
            rs = r[s] * sw[s, None]
            J, J_d = self._jacobians(prm, s)
            used = (sw[s] > 0)[:, None]  # zero weight (points behind): Jacobians may be inf there
            J = torch.where(used[..., None], J * sw[s, None, None], 0.0)
            J_d = torch.where(used, J_d * sw[s, None], 0.0)
            X = J.view(-1, 2 * W, 2 * B)
            seg = self.res_seg_pair[k // W : (k + rs.shape[0]) // W]
            add_rows(blocks, seg, X.transpose(1, 2) @ X)
            g_pair.index_add_(0, seg, (X.transpose(1, 2) @ rs.reshape(-1, 2 * W, 1))[..., 0])
            h.index_add_(0, self.sa[s], (J_d * J_d).sum(1))
            g_d.index_add_(0, self.sa[s], (J_d * rs).sum(1))
            u = J[:, 0] * J_d[:, :1] + J[:, 1] * J_d[:, 1:]  # (b, 18) JᵀWJ_d
            V.index_add_(0, self.e_o[s], u[:, :B])
            V.index_add_(0, self.e_s[s], u[:, B:])
        inv_h = self.free_d_t / (h + 1e-12)
        sblocks = torch.zeros(P, 2 * B, 2 * B, dtype=dt, device=dev)
        for k in range(0, self.ei.numel(), _BATCH):
            s = slice(k, k + _BATCH)
            vi, vj = V.index_select(0, self.ei[s]), V.index_select(0, self.ej[s])
            sc, ih = self.row_scale[s][:, None], inv_h[self.ent_anchor[self.ei[s]]][:, None]
            # Σ over the entry pairs of an anchor gives v_i v_jᵀ / h once per pair and v_i v_iᵀ / h once per entry
            x = torch.cat([vi, vj * sc], 1).view(-1, W, 2 * B)
            y = torch.cat([vi * (sc * ih), vj * ih], 1).view(-1, W, 2 * B)
            add_rows(sblocks, self.s_seg_pair[k // W : (k + vi.shape[0]) // W], x.transpose(1, 2) @ y)
        g_ext = torch.zeros(N, B, dtype=dt, device=dev)
        g_ext.index_add_(0, self.pair_a, g_pair[:, :B])
        g_ext.index_add_(0, self.pair_b, g_pair[:, B:])
        e_ext = torch.zeros(N, B, dtype=dt, device=dev)
        e_ext.index_add_(0, self.ent_img, V * (g_d * inv_h)[self.ent_anchor][:, None])
        H = self._assemble(blocks)
        E = self._assemble(sblocks)
        return CameraSystem(H=H, E=E, g=self._vector(g_ext), e=self._vector(e_ext), h=h, g_d=g_d, V=V)

    def _assemble(self, blocks: torch.Tensor) -> sp.csr_matrix:
        B = _BLOCK
        diag = torch.zeros(self.N, B, B, dtype=blocks.dtype, device=blocks.device)
        add_rows(diag, self.pair_a, blocks[:, :B, :B])
        add_rows(diag, self.pair_b, blocks[:, B:, B:])
        return self.scatter.matrix(self.scatter.data(diag.cpu().numpy(), blocks[:, :B, B:].cpu().numpy()))

    def _vector(self, ext: torch.Tensor) -> np.ndarray:
        full = np.bincount(self.colmap_np.ravel(), weights=ext.cpu().numpy().ravel(), minlength=self.ncol)
        return full[self.free_c]

    def solve(self, system: CameraSystem, mu: float) -> tuple[np.ndarray, torch.Tensor]:
        """Damped step: (camera increments (ncol,), fixed columns 0; log-depth increments (A,)).

        Raises RuntimeError when the reduced system is singular.
        """
        H, E = system.H, system.E
        data = H.data - E.data / (1 + mu)
        data[self.scatter.diag] += mu * H.data[self.scatter.diag] + 1e-12
        S = self.scatter.matrix(data)
        rhs = -(system.g - system.e / (1 + mu))
        if self.dense_solve:
            Sd = torch.as_tensor(S.toarray(), device=self.device)
            rt = torch.as_tensor(rhs, device=self.device)[:, None]
            L, info = torch.linalg.cholesky_ex(Sd)
            # not numerically positive definite: LU as the sparse path (raises RuntimeError when singular)
            dct = torch.cholesky_solve(rt, L) if int(info) == 0 else torch.linalg.solve(Sd, rt)
            dc = dct[:, 0].cpu().numpy()
            if not np.isfinite(dc).all():
                raise RuntimeError("singular camera system")
        else:
            dc = spla.splu(S.tocsc()).solve(rhs)
        full_c = np.zeros(self.ncol)
        full_c[self.free_c] = dc
        dc_ext = torch.as_tensor(full_c, device=self.device)[self.colmap]  # (N, 9)
        q = torch.zeros(self.A, dtype=dc_ext.dtype, device=self.device)
        q.index_add_(0, self.ent_anchor, (system.V * dc_ext.index_select(0, self.ent_img)).sum(1))
        ddep = (-system.g_d - q) / (system.h * (1 + mu) + 1e-12) * self.free_d_t
        return full_c, ddep

    def step(self, prm: ReprojectionParams, full_c: torch.Tensor, full_d: torch.Tensor) -> ReprojectionParams:
        """Apply increments (ncol,), (A,) (torch, differentiable)."""
        N, nf = self.N, self.nf
        dpose = full_c[: 6 * N].reshape(N, 6)
        return ReprojectionParams(
            Q=rotvec_to_rotmat(dpose[:, :3]) @ prm.Q,
            C=prm.C + dpose[:, 3:],
            logd=prm.logd + full_d,
            logf=prm.logf + full_c[6 * N : 6 * N + nf],
            PP=prm.PP + full_c[6 * N + nf :].reshape(nf, 2)[self.fidx_t],
        )

    def match_errors(self, r: torch.Tensor) -> np.ndarray:
        """(2K,) reprojection error of each residual in the caller's order (K observed in image i, then j)."""
        err = np.empty(2 * self.K)
        err[self.perm] = torch.linalg.norm(r[self.real], dim=1).cpu().numpy()
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
    device: str | torch.device = "cpu",
    on_iteration: Callable[[int, int, float], None] | None = None,  # (iteration, max_iters, cost) per step
) -> ReprojectionResult:
    """Minimise the symmetric reprojection error of the kept matches."""
    N = len(canon.image_names)
    fidx = np.arange(N) if groups is None else np.asarray(groups, np.int64)
    prob = ReprojectionProblem(canon, keep, fidx, fixed_focal, root, conf, device)
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
        full_d = full_d.clamp(-_MAX_LOG_DEPTH_STEP, _MAX_LOG_DEPTH_STEP)
        prm_n = prob.step(state[0], torch.as_tensor(full_c, device=prob.device), full_d)
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
    fl = np.exp(prm.logf.cpu().numpy())[fidx]
    fl[fixed_focal] = focal[fixed_focal]  # exactly as given (no exp/log round trip)
    return ReprojectionResult(
        rotations=np.transpose(prm.Q.cpu().numpy(), (0, 2, 1)),
        centres=prm.C.cpu().numpy(),
        depths=np.exp(prm.logd.cpu().numpy()),
        focal=fl,
        pp=prm.PP.cpu().numpy(),
        inlier_matches=inl,
        cost_history=tuple(history),
        final_rms_px=rms,
    )

