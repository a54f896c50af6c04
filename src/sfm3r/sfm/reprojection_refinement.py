"""2D refinement (a): the reference's reprojection objective (§7) on anchor depths, focals and poses.

For every kept match (anchor a in image i, anchor b in image j), the world point built from image j's anchor
depth, X_b = Q_j·d_b·K_j⁻¹[x_b, 1] + C_j, is projected into image i and compared with the observed pixel x_a,
and symmetrically. Parameters: per image a rotation increment (3), the centre (3), log focal (one per camera
group, none when fixed) and one log depth per anchor. Robust Cauchy loss in pixels, weighted by match
confidence; Levenberg–Marquardt with the anchor depths eliminated by a Schur complement (their block of the
normal equations is diagonal), so each step solves a system the size of the camera parameters only.
Gauge: the root pose and one anchor depth of the root are fixed. Principal points (one per camera group)
stay fixed unless ``optimise_pp``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import roma
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from sfm3r.sfm.canonical import CanonicalData
from sfm3r.sfm.coarse_alignment import skew

logger = logging.getLogger(__name__)


# A principal point is refined only for cameras shared by at least this many images: one image alone cannot
# separate it from its rotation (measured unstable with a principal point per image).
MIN_IMAGES_FOR_PP = 5


@dataclass(frozen=True, kw_only=True)
class RefineConf2D:
    max_iters: int = 30
    robust_scale_px: float = 1.0  # Cauchy scale of the reprojection error (final); 1 px measured best on Strecha
    # > robust_scale_px: start at this scale and halve per iteration (measured: no gain on real or ring data)
    initial_robust_scale_px: float = 0.0
    tolerance: float = 1e-6  # stop when the relative cost decrease falls below
    outlier_px: float = 6.0  # matches with a larger error in either image are dropped from the output
    optimise_focal: bool = True
    # principal points of cameras shared by >= MIN_IMAGES_FOR_PP images. Measured (classic backend, AUC@3):
    # fountain 88.6 -> 97.0, herzjesu 91.0 -> 98.2, temple ring 69.7 -> 91.7. The 3DGS export crops the
    # images so that graphdeco 3DGS, which assumes a centred principal point, stays consistent.
    optimise_pp: bool = True


@dataclass(frozen=True, eq=False)
class RefineResult2D:
    rotations: np.ndarray  # (N, 3, 3) cam_from_world
    centres: np.ndarray  # (N, 3)
    depths: np.ndarray  # (A,) world-unit anchor depths
    focal: np.ndarray  # (N,)
    pp: np.ndarray  # (N, 2)
    inlier_matches: np.ndarray  # (K,) bool
    cost_history: tuple[float, ...]
    final_rms_px: float


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
    conf: RefineConf2D,
    *,
    groups: np.ndarray | None = None,  # (N,) camera group of each image (shared intrinsics); None: per image
    device: str | torch.device = "cpu",
) -> RefineResult2D:
    """Minimise the symmetric reprojection error of the kept matches."""
    dt = torch.float64
    N, A = len(canon.image_names), canon.anchor_depth.size
    tt = lambda x, d=dt: torch.as_tensor(np.ascontiguousarray(x), dtype=d, device=device)  # noqa: E731
    ma, mb = canon.match_a[keep], canon.match_b[keep]
    # both directions: observer o sees anchor s (source) of image src
    obs_anchor = np.concatenate([ma, mb])
    src_anchor = np.concatenate([mb, ma])
    o_img = canon.anchor_image[obs_anchor]
    s_img = canon.anchor_image[src_anchor]
    c = np.tile(canon.match_conf[keep], 2)
    c = tt(c / max(c.mean(), 1e-12))
    x_obs = tt(canon.anchor_xy[obs_anchor])
    x_src = tt(canon.anchor_xy[src_anchor])
    oi, si = tt(o_img, torch.int64), tt(s_img, torch.int64)
    sa = tt(src_anchor, torch.int64)
    PP = tt(pp)  # (N, 2) current principal points
    Q = tt(np.transpose(rotations, (0, 2, 1)))
    # columns: 6 per image, then focal params, then (eliminated) depths
    fidx = np.arange(N) if groups is None else np.asarray(groups, np.int64)
    nf = int(fidx.max()) + 1
    first_of_group = np.full(nf, -1)
    first_of_group[fidx[::-1]] = np.arange(N)[::-1]
    C, logd, logf = tt(centres), tt(np.log(depths)), tt(np.log(focal[first_of_group]))  # logf: (nf,)
    opt_f = conf.optimise_focal
    ncol = 6 * N + 3 * nf  # poses, log focals, principal points (x, y per intrinsics group)
    free_c = np.ones(ncol, bool)
    free_c[6 * root : 6 * root + 6] = False
    free_c[6 * N + fidx[fixed_focal]] = False
    if not opt_f:
        free_c[6 * N : 6 * N + nf] = False
    pcol = 6 * N + nf + 2 * fidx  # (N,) first pp column of each image
    if not conf.optimise_pp:
        free_c[6 * N + nf :] = False
    small = np.flatnonzero(np.bincount(fidx, minlength=nf) < MIN_IMAGES_FOR_PP)
    free_c[np.concatenate([6 * N + nf + 2 * small, 6 * N + nf + 2 * small + 1])] = False
    free_c[np.concatenate([pcol[fixed_focal], pcol[fixed_focal] + 1])] = False
    free_d = np.ones(A, bool)
    root_anchors = np.flatnonzero(canon.anchor_image == root)
    if root_anchors.size:
        free_d[root_anchors[0]] = False
    scale_px = max(conf.initial_robust_scale_px, conf.robust_scale_px)
    delta2 = scale_px**2
    R_rows = 2 * o_img.size

    def forward(Q, C, logd, logf, PP):
        f = torch.exp(logf)
        fs, fo = f[tt(fidx[s_img], torch.int64)], f[tt(fidx[o_img], torch.int64)]
        ray = torch.cat([(x_src - PP[si]) / fs[:, None], torch.ones_like(fs)[:, None]], 1)
        p = torch.exp(logd[sa])[:, None] * ray
        qp = (Q[si] @ p[..., None])[..., 0]
        X = qp + C[si]
        y = (Q[oi].transpose(1, 2) @ (X - C[oi])[..., None])[..., 0]
        z = y[:, 2].clamp_min(1e-9)
        proj = fo[:, None] * y[:, :2] / z[:, None] + PP[oi]
        return proj - x_obs, (fs, fo, p, qp, X, y, z)

    def cost(r):
        return float((c * delta2 * torch.log1p((r * r).sum(1) / delta2)).sum())

    r, aux = forward(Q, C, logd, logf, PP)
    f = cost(r)
    history = [f]
    mu = 1e-4
    rows2 = np.arange(R_rows).reshape(-1, 2)
    for _ in range(conf.max_iters):
        annealing = scale_px > conf.robust_scale_px
        if annealing:
            scale_px = max(scale_px / 2, conf.robust_scale_px)
            delta2 = scale_px**2
            f = cost(r)
        fs, fo, p, qp, X, y, z = aux
        w = c / (1 + (r * r).sum(1) / delta2)
        Qo_t = Q[oi].transpose(1, 2)
        dpi_dy = torch.zeros(y.shape[0], 2, 3, dtype=dt, device=device)
        dpi_dy[:, 0, 0] = fo / z
        dpi_dy[:, 1, 1] = fo / z
        dpi_dy[:, :, 2] = -fo[:, None] * y[:, :2] / (z * z)[:, None]
        J_o = torch.cat([dpi_dy @ Qo_t @ skew(X - C[oi]), -(dpi_dy @ Qo_t)], 2)  # (R, 2, 6)
        dpi_dX = dpi_dy @ Qo_t
        J_s = torch.cat([dpi_dX @ -skew(qp), dpi_dX], 2)  # (R, 2, 6)
        J_fo = (r + x_obs - PP[oi])  # (R, 2)
        dp_dlogf = torch.cat([-p[:, :2], torch.zeros_like(p[:, :1])], 1)
        J_fs = (dpi_dX @ (Q[si] @ dp_dlogf[..., None]))[..., 0]
        J_d = (dpi_dX @ qp[..., None])[..., 0]  # (R, 2)
        # principal points: observer directly (identity), source through its ray
        J_ps = -(dpi_dX @ Q[si][:, :, :2]) * (torch.exp(logd[sa]) / fs)[:, None, None]  # (R, 2, 2)
        same_f = fidx[o_img] == fidx[s_img]
        same_f_t = tt(same_f, torch.bool)
        J_fo = torch.where(same_f_t[:, None], J_fo + J_fs, J_fo)
        # sparse camera Jacobian: 12 pose columns + 1 or 2 focal columns per 2-row residual
        sw = torch.sqrt(w)[:, None]
        vals = [J_o * sw[..., None], J_s * sw[..., None]]
        cols = [6 * o_img[:, None] + np.arange(6), 6 * s_img[:, None] + np.arange(6)]
        Jc_v = torch.cat(vals, 2).cpu().numpy()  # (R, 2, 12)
        Jc_c = np.concatenate(cols, 1)  # (R, 12)
        fo_v, fs_v = (J_fo * sw).cpu().numpy(), (J_fs * sw).cpu().numpy()
        fs_v[same_f] = 0.0
        rr = np.broadcast_to(rows2[:, :, None], Jc_v.shape)
        rows = [rr.ravel(), rows2.ravel(), rows2.ravel()]
        colsall = [
            np.broadcast_to(Jc_c[:, None, :], Jc_v.shape).ravel(),
            np.repeat(6 * N + fidx[o_img], 2), np.repeat(6 * N + fidx[s_img], 2),
        ]
        valsall = [Jc_v.ravel(), fo_v.ravel(), fs_v.ravel()]
        if conf.optimise_pp:
            po = np.broadcast_to(np.eye(2), (o_img.size, 2, 2)) * sw.cpu().numpy()[..., None]
            ps = (J_ps * sw[..., None]).cpu().numpy()
            for vals_p, img_p in ((po, o_img), (ps, s_img)):
                rows.append(np.broadcast_to(rows2[:, :, None], vals_p.shape).ravel())
                colsall.append(np.broadcast_to((pcol[img_p][:, None] + np.arange(2))[:, None, :], vals_p.shape).ravel())
                valsall.append(vals_p.ravel())
        Jc = sp.csr_matrix(
            (np.concatenate(valsall), (np.concatenate(rows), np.concatenate(colsall))), shape=(R_rows, ncol)
        )[:, free_c]
        jd = (J_d * sw).cpu().numpy().ravel()
        Jd = sp.csr_matrix((jd, (rows2.ravel(), np.repeat(src_anchor, 2))), shape=(R_rows, A))[:, free_d]
        rw = (r * sw).cpu().numpy().ravel()
        Hcc = (Jc.T @ Jc).tocsr()
        Hcd = (Jc.T @ Jd).tocsr()
        hdd = np.asarray(Jd.multiply(Jd).sum(0)).ravel()
        gc, gd = Jc.T @ rw, Jd.T @ rw
        improved = False
        for _ in range(8):
            dd_inv = 1.0 / (hdd * (1 + mu) + 1e-12)
            Hc = Hcc + sp.diags(mu * Hcc.diagonal() + 1e-12)
            S = (Hc - Hcd @ sp.diags(dd_inv) @ Hcd.T).tocsc()
            rhs = -(gc - Hcd @ (dd_inv * gd))
            try:
                dc = spla.splu(S).solve(rhs)
            except RuntimeError:
                mu *= 10
                continue
            ddep = dd_inv * (-gd - Hcd.T @ dc)
            full_c = np.zeros(ncol)
            full_c[free_c] = dc
            full_d = np.zeros(A)
            full_d[free_d] = ddep
            dpose = tt(full_c[: 6 * N].reshape(N, 6))
            Qn = roma.rotvec_to_rotmat(dpose[:, :3]) @ Q
            Cn = C + dpose[:, 3:]
            logfn = logf + tt(full_c[6 * N : 6 * N + nf])
            PPn = PP + tt(full_c[6 * N + nf :].reshape(nf, 2))[tt(fidx, torch.int64)]
            logdn = logd + tt(full_d)
            rn, auxn = forward(Qn, Cn, logdn, logfn, PPn)
            fn = cost(rn)
            behind = int((auxn[6] <= 1e-6).sum())  # points behind an observer must not increase
            if np.isfinite(fn) and fn < f and behind <= int((aux[6] <= 1e-6).sum()):
                Q, C, logd, logf, PP, r, aux = Qn, Cn, logdn, logfn, PPn, rn, auxn
                mu = max(mu / 3, 1e-9)
                improved = True
                break
            mu *= 10
        if not improved:
            if annealing:
                continue
            break
        rel = (f - fn) / max(f, 1e-300)
        f = fn
        history.append(f)
        if rel < conf.tolerance and not annealing:
            break
    err = torch.linalg.norm(r, dim=1).cpu().numpy()
    K = ma.size
    bad = (err[:K] > conf.outlier_px) | (err[K:] > conf.outlier_px)
    inl = keep.copy()
    inl[np.flatnonzero(keep)[bad]] = False
    rms = float(np.sqrt(np.mean(err[np.concatenate([~bad, ~bad])] ** 2))) if (~bad).any() else float("nan")
    logger.info("reprojection refinement: cost %.4g -> %.4g in %d iterations, inlier rms %.3f px",
                history[0], history[-1], len(history) - 1, rms)
    fl = np.exp(logf.cpu().numpy())[fidx]
    fl[fixed_focal] = focal[fixed_focal]  # exactly as given (no exp/log round trip)
    return RefineResult2D(
        rotations=np.transpose(Q.cpu().numpy(), (0, 2, 1)),
        centres=C.cpu().numpy(),
        depths=np.exp(logd.cpu().numpy()),
        focal=fl,
        pp=PP.cpu().numpy(),
        inlier_matches=inl,
        cost_history=tuple(history),
        final_rms_px=rms,
    )
