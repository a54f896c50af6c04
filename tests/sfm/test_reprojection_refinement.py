"""The 2D reprojection refinement's depth-reduced normal equations against a dense autograd Jacobian.

A tiny scene (6 images, every pair matched, anchors seen by up to 5 other images) at perturbed parameters:
the block-wise camera system H = JcᵀWJc, its gradient, the Schur term of the eliminated depths and the damped
step must equal the ones computed straightforwardly from the dense Jacobian of the residual function.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from alignment_synthetic import make_scene, project
from sfm3r.sfm.align.block_lm import image_graph_fill
from sfm3r.sfm.align.canonical import CanonicalData
from sfm3r.sfm.align.reprojection_refinement import ReprojectionConf, ReprojectionProblem, refine_reprojection
from sfm3r.sfm.geometry import arrays as backends
from sfm3r.sfm.geometry.arrays import Arrays
from sfm3r.sfm.geometry.rotation import rotvec_to_rotmat


def _tiny_problem(seed: int = 0):
    """CanonicalData of 6 cameras (all 15 pairs matched) and perturbed starting parameters."""
    scene = make_scene(6, num_points=40, arc_deg=60.0, seed=seed)
    rng = np.random.default_rng(seed)
    anchor_image, anchor_id, xy, depth, index = [], [], [], [], {}
    for k in range(len(scene.images)):
        pix, z, vis = project(scene, k)
        for pt in np.flatnonzero(vis):
            index[k, pt] = len(anchor_image)
            anchor_image.append(k)
            anchor_id.append(pt)
            xy.append(pix[pt] + 0.5 * rng.normal(size=2))
            depth.append(z[pt] * (1 + 0.02 * rng.normal()))
    ma, mb, me, ei, ej = [], [], [], [], []
    for e, (i, j) in enumerate(itertools.combinations(range(len(scene.images)), 2)):
        ei.append(i)
        ej.append(j)
        for pt in range(scene.points.shape[0]):
            if (i, pt) in index and (j, pt) in index:
                ma.append(index[i, pt])
                mb.append(index[j, pt])
                me.append(e)
    A, K, N = len(anchor_image), len(ma), len(scene.images)
    canon = CanonicalData(
        image_names=scene.image_names, anchor_image=np.array(anchor_image), anchor_id=np.array(anchor_id),
        anchor_xy=np.array(xy), anchor_depth=np.array(depth), anchor_conf=np.ones(A), focal=np.full(N, np.nan),
        edge_i=np.array(ei), edge_j=np.array(ej), edge_scale_i=np.ones(len(ei)), edge_scale_j=np.ones(len(ei)),
        match_edge=np.array(me), match_a=np.array(ma), match_b=np.array(mb), match_conf=rng.uniform(0.5, 1.0, K),
    )
    noise = rotvec_to_rotmat(0.01 * rng.normal(size=(N, 3)))
    rotations = noise @ scene.rotations
    centres = np.stack([-R.T @ t for R, t in zip(scene.rotations, scene.translations, strict=True)])
    centres = centres + 0.03 * rng.normal(size=centres.shape)
    depths = canon.anchor_depth * np.exp(0.02 * rng.normal(size=A))
    focal = np.array([c.fx for c in scene.cameras]) * 1.03
    pp = np.array([[c.cx, c.cy] for c in scene.cameras]) + rng.normal(size=2)  # one camera's
    return canon, rotations, centres, depths, focal, pp


@pytest.mark.parametrize(
    "groups, fixed",
    [
        ([0, 0, 0, 0, 0, 1], []),  # a shared camera (principal point free) and a camera of its own
        ([0, 1, 2, 3, 4, 5], [2]),  # a camera per image, one focal known (principal points fixed)
    ],
)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_camera_system_and_step_match_the_dense_jacobian(groups, fixed, backend):
    """The system of each array backend against the dense Jacobian (autograd, always on torch)."""
    torch.set_num_threads(1)
    canon, rotations, centres, depths, focal, pp = _tiny_problem()
    N, A = len(canon.image_names), canon.anchor_depth.size
    fixed_focal = np.isin(np.arange(N), fixed)
    keep = np.ones(canon.match_a.size, bool)
    keep[::7] = False  # some matches unused
    arrays = Arrays(np) if backend == "numpy" else Arrays(torch, torch.device("cpu"))
    tested = ReprojectionProblem(canon, keep, np.array(groups), fixed_focal, 1, ReprojectionConf(), arrays)
    prob = ReprojectionProblem(canon, keep, np.array(groups), fixed_focal, 1, ReprojectionConf(),
                               Arrays(torch, torch.device("cpu")))
    entries_per_anchor = np.bincount(Arrays.to_numpy(prob.ent_anchor[:-1]), minlength=A)
    assert entries_per_anchor.max() >= 4  # anchors seen by several images: the general Schur path
    prm = prob.initial_params(rotations, centres, depths, focal, pp)
    r, _ = prob.residuals(prm)
    delta2 = 2.0**2
    tested_prm = tested.initial_params(rotations, centres, depths, focal, pp)
    system = tested.system(tested_prm, tested.residuals(tested_prm)[0], delta2)
    assert isinstance(system.h, np.ndarray if backend == "numpy" else torch.Tensor)

    ncol = prob.ncol

    def residual_of_step(delta):
        return prob.residuals(prob.step(prm, delta[:ncol], delta[ncol:]))[0].reshape(-1)

    J = torch.autograd.functional.jacobian(
        residual_of_step, torch.zeros(ncol + A, dtype=torch.float64), vectorize=True, strategy="forward-mode"
    )
    w = prob.weights(r, delta2).repeat_interleave(2)
    Jc, Jd = J[:, :ncol][:, prob.free_c], J[:, ncol:][:, prob.free_d]
    rv = r.reshape(-1)
    H = Jc.T @ (w[:, None] * Jc)
    g = Jc.T @ (w * rv)
    Hcd = Jc.T @ (w[:, None] * Jd)
    h = (w[:, None] * Jd * Jd).sum(0)
    gd = Jd.T @ (w * rv)
    used = h > 0
    E = Hcd[:, used] @ (Hcd[:, used] / h[used]).T
    e = Hcd[:, used] @ (gd[used] / h[used])
    assert prob.free_c[6 * N :].sum() == (4 if groups[1] == 0 else 5)  # focals (and a principal point) in play

    def close(a, b):
        a, b = np.asarray(a), np.asarray(b)
        assert np.abs(a - b).max() <= 1e-9 * np.abs(b).max()

    close(system.H.toarray(), H)
    close(system.g, g)
    close(system.E.toarray(), E)
    close(system.e, e)
    close(Arrays.to_numpy(system.h)[prob.free_d], h)
    close(Arrays.to_numpy(system.g_d)[prob.free_d], gd)

    # the damped step equals the dense solve of the full (cameras + depths) damped system
    mu = 1e-3
    F, D = H.shape[0], h.shape[0]
    M = torch.zeros(F + D, F + D, dtype=torch.float64)
    M[:F, :F] = H + torch.diag(mu * torch.diag(H) + 1e-12)
    M[:F, F:], M[F:, :F] = Hcd, Hcd.T
    M[F:, F:] = torch.diag(h * (1 + mu) + 1e-12)
    dense = torch.linalg.solve(M, -torch.cat([g, gd]))
    for dense_solve in (False, True):  # sparse LU, dense Cholesky (chosen by the predicted fill-in)
        tested.dense_solve = dense_solve
        full_c, full_d = tested.solve(system, mu)
        full_d = Arrays.to_numpy(full_d)
        close(full_c[prob.free_c], dense[:F])
        close(full_d[prob.free_d], dense[F:])
        assert not full_c[~prob.free_c].any() and not full_d[~prob.free_d].any()


def test_dense_factorisation_only_for_graphs_whose_sparse_lu_fills_in():
    n = 400
    ring = np.array([(i, (i + d) % n) for i in range(n) for d in range(1, 6)])
    rng = np.random.default_rng(0)
    random = np.concatenate([ring, np.stack([np.arange(n).repeat(5), rng.integers(0, n, 5 * n)], 1)])
    random = random[random[:, 0] != random[:, 1]]
    assert image_graph_fill(ring, n) < 0.1
    assert image_graph_fill(random, n) > 0.5


def test_refinement_reduces_the_error_and_maps_inliers_back_to_the_matches():
    torch.set_num_threads(1)
    canon, rotations, centres, depths, focal, pp = _tiny_problem(seed=1)
    keep = np.ones(canon.match_a.size, bool)
    keep[:3] = False
    # two corrupted matches: far from the truth in both images
    canon.anchor_xy[canon.match_a[5]] += 40.0
    canon.anchor_xy[canon.match_b[5]] -= 40.0
    N = len(canon.image_names)
    res = refine_reprojection(canon, rotations, centres, depths, focal, pp, keep, np.zeros(N, bool), 0,
                              ReprojectionConf(), groups=np.zeros(N, np.int64))
    assert res.cost_history[-1] < 0.2 * res.cost_history[0]
    assert res.final_rms_px < 1.0
    assert not res.inlier_matches[:3].any() and not res.inlier_matches[5]
    assert res.inlier_matches.sum() >= 0.95 * (keep.sum() - 1)
    assert np.allclose(res.focal, res.focal[0]) and np.allclose(res.pp, res.pp[0])


def test_block_lm_dense_and_sparse_solves_agree():
    import scipy.sparse as sp

    from sfm3r.sfm.align.block_lm import solve_damped

    rng = np.random.default_rng(3)
    A = rng.normal(size=(40, 30))
    H = sp.csr_matrix(A.T @ A)
    g = rng.normal(size=30)
    free = np.ones(30, bool)
    free[:7] = False
    sparse = solve_damped(H, g, 1e-3, free)
    dense = solve_damped(H, g, 1e-3, free, dense=True)
    np.testing.assert_allclose(dense, sparse, rtol=1e-9, atol=1e-12)
    assert not dense[:7].any()


def test_refinement_stops_once_no_camera_moves_with_the_cameras_of_a_full_run():
    """The camera-step stop ends the iterations early, with the cameras where many more iterations put them."""
    torch.set_num_threads(1)
    canon, rotations, centres, depths, focal, pp = _tiny_problem(seed=2)
    keep = np.ones(canon.match_a.size, bool)
    N = len(canon.image_names)
    args = (canon, rotations, centres, depths, focal, pp, keep, np.zeros(N, bool), 0)
    early = refine_reprojection(*args, ReprojectionConf(), groups=np.zeros(N, np.int64))
    full = refine_reprojection(*args, ReprojectionConf(tolerance=1e-12, camera_step_tolerance=0.0, max_iters=30),
                               groups=np.zeros(N, np.int64))
    assert len(early.cost_history) < len(full.cost_history)
    angle = np.degrees(np.arccos(np.clip((np.trace(early.rotations @ full.rotations.transpose(0, 2, 1),
                                                   axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert angle.max() < 3e-3  # degrees: the camera steps left are ~1e-5 rad and shrinking
    np.testing.assert_allclose(early.centres, full.centres, atol=1e-4 * np.median(depths))
    np.testing.assert_allclose(early.focal, full.focal, rtol=1e-4)


def test_numpy_and_torch_refinements_agree(monkeypatch):
    """The backend is chosen by size (NUMPY_MAX_MATCHES); both give the same refinement to float rounding."""
    torch.set_num_threads(1)
    canon, rotations, centres, depths, focal, pp = _tiny_problem(seed=1)
    keep = np.ones(canon.match_a.size, bool)
    N = len(canon.image_names)
    args = (canon, rotations, centres, depths, focal, pp, keep, np.zeros(N, bool), 0, ReprojectionConf())
    on_numpy = refine_reprojection(*args, groups=np.zeros(N, np.int64))
    monkeypatch.setattr(backends, "NUMPY_MAX_MATCHES", 0)  # every problem on torch
    on_torch = refine_reprojection(*args, groups=np.zeros(N, np.int64))
    assert len(on_numpy.cost_history) == len(on_torch.cost_history)
    np.testing.assert_allclose(on_numpy.cost_history, on_torch.cost_history, rtol=1e-9)
    np.testing.assert_allclose(on_numpy.rotations, on_torch.rotations, atol=1e-10)
    np.testing.assert_allclose(on_numpy.centres, on_torch.centres, atol=1e-10 * np.median(depths))
    np.testing.assert_allclose(on_numpy.depths, on_torch.depths, rtol=1e-9)
    np.testing.assert_allclose(on_numpy.focal, on_torch.focal, rtol=1e-10)
    assert (on_numpy.inlier_matches == on_torch.inlier_matches).all()


def test_numpy_and_torch_coarse_alignments_agree(monkeypatch):
    """The coarse 3D alignment (which starts the refinement above) on both backends: one result, lower cost."""
    from sfm3r.sfm.align.coarse_alignment import coarse_align
    from sfm3r.sfm.align.step_confs import CoarseConf

    torch.set_num_threads(1)
    canon, rotations, centres, depths, focal, pp = _tiny_problem(seed=3)
    N = len(canon.image_names)
    args = (canon, rotations, centres, np.ones(N), focal, pp, 0, CoarseConf())
    on_numpy = coarse_align(*args)
    monkeypatch.setattr(backends, "NUMPY_MAX_MATCHES", 0)
    on_torch = coarse_align(*args)
    assert on_numpy.cost_history[-1] < 0.7 * on_numpy.cost_history[0]  # the 2 % depth noise stays
    np.testing.assert_allclose(on_numpy.cost_history, on_torch.cost_history, rtol=1e-9)
    np.testing.assert_allclose(on_numpy.rotations, on_torch.rotations, atol=1e-10)
    np.testing.assert_allclose(on_numpy.centres, on_torch.centres, atol=1e-10 * np.median(depths))
    np.testing.assert_allclose(on_numpy.scales, on_torch.scales, rtol=1e-9)
    assert (on_numpy.inlier_matches == on_torch.inlier_matches).all()
