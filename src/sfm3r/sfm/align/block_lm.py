"""A small block-sparse Levenberg–Marquardt step shared by the coarse and the reprojection stages.

Residuals come in groups of `d` rows; each group depends on two parameter blocks of size `p` (the two images
of a match). Per-group Jacobian blocks (K, d, p), numpy or torch (geometry.arrays), are reduced per unique
block pair by scatter-adds into the blocks of JᵀWJ, which is assembled as a scipy sparse matrix and solved with a sparse LU. Memory is
O(K·d·p) for the Jacobians plus O((N + E)·p²) for the normal equations: no dense N×N matrix.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from sfm3r.sfm.geometry.arrays import Array, arrays_like


def normal_equations(
    J_a: Array,  # (K, d, p) Jacobian w.r.t. block a of each group (numpy or torch, as all arrays here)
    J_b: Array,  # (K, d, p) Jacobian w.r.t. block b
    r: Array,  # (K, d) residuals
    w: Array,  # (K,) weights (confidence × robust IRLS weight)
    block_a: Array,  # (K,) int64 parameter block index
    block_b: Array,  # (K,) int64
    pair_id: Array,  # (K,) int64 id of the unordered (a, b) block pair, in [0, P)
    pair_ab: np.ndarray,  # (P, 2) int64 the blocks of each pair id
    num_blocks: int,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """JᵀWJ (num_blocks·p square, sparse) and JᵀWr (num_blocks·p,)."""
    arrays = arrays_like(r)
    p = J_a.shape[-1]
    wa = J_a * w[:, None, None]
    wb = J_b * w[:, None, None]
    # each group is a segment of d rows; groups of one image pair are consecutive (callers order them by pair),
    # so that numpy makes one BLAS product per pair (Arrays.segment_products)
    H_aa = arrays.zeros(num_blocks, p, p)
    arrays.segment_products(H_aa, block_a, wa, J_a)
    arrays.segment_products(H_aa, block_b, wb, J_b)
    P = pair_ab.shape[0]
    H_ab = arrays.zeros(P, p, p)
    arrays.segment_products(H_ab, pair_id, wa, J_b)
    g = arrays.zeros(num_blocks, p, 1)
    arrays.segment_products(g, block_a, wa, r[..., None])
    arrays.segment_products(g, block_b, wb, r[..., None])
    ar = np.arange(p)
    rows, cols, vals = [], [], []
    bi = np.arange(num_blocks)
    rows.append((bi[:, None, None] * p + ar[None, :, None]).repeat(p, 2).ravel())
    cols.append((bi[:, None, None] * p + ar[None, None, :]).repeat(p, 1).ravel())
    vals.append(arrays.to_numpy(H_aa).ravel())
    Hab = arrays.to_numpy(H_ab)
    a, b = pair_ab[:, 0], pair_ab[:, 1]
    ra = (a[:, None, None] * p + ar[None, :, None]).repeat(p, 2)
    cb = (b[:, None, None] * p + ar[None, None, :]).repeat(p, 1)
    rows += [ra.ravel(), cb.transpose(0, 2, 1).ravel()]
    cols += [cb.ravel(), ra.transpose(0, 2, 1).ravel()]
    vals += [Hab.ravel(), Hab.transpose(0, 2, 1).ravel()]
    n = num_blocks * p
    H = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return H, arrays.to_numpy(g).ravel()  # (num_blocks·p,)


# Predicted fraction of non-zeros in the sparse LU factors above which a dense Cholesky is faster (measured on
# 1,000 images: ring 1 % fill, sparse LU 57 ms; retrieval-like graph 97 % fill, sparse LU 33 s, dense 3 s).
DENSE_FILL = 0.3
DENSE_MAX_COLUMNS = 10000  # a dense system and its factor: 2 × 800 MB at the limit


def image_graph_fill(pairs: np.ndarray, num_images: int) -> float:
    """Fraction of the sparse LU factors of the image graph that is non-zero: a fill-in predictor.

    A camera system's blocks follow the image graph `pairs` (P, 2), so the LU of a diagonally dominant matrix
    with the graph's pattern (N × N, milliseconds) predicts the fill-in of the system's factors.
    """
    a, b = pairs[:, 0], pairs[:, 1]
    G = sp.csr_matrix((np.ones(a.size), (a, b)), shape=(num_images, num_images))
    G = G + G.T
    G = G + sp.diags(np.asarray(G.sum(1)).ravel() + 1.0)
    lu = spla.splu(G.tocsc())
    return (lu.L.nnz + lu.U.nnz - num_images) / float(num_images) ** 2


def dense_solve(M: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """M⁻¹ rhs by Cholesky, or by LU when M is not numerically positive definite (LinAlgError when singular)."""
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(M), rhs)
    except np.linalg.LinAlgError:
        return np.linalg.solve(M, rhs)


def solve_damped(
    H: sp.csr_matrix, g: np.ndarray, damping: float, free: np.ndarray, *, dense: bool = False
) -> np.ndarray:
    """Solve (H + μ·diag(H)) δ = −g on the `free` (bool, (n,)) parameters; fixed ones get δ = 0.

    `dense`: a dense Cholesky instead of the sparse LU (see DENSE_FILL); LU when not positive definite.
    """
    Hf = H[free][:, free]
    d = Hf.diagonal()
    Hf = Hf + sp.diags(damping * np.maximum(d, 1e-9 * max(d.max(initial=0.0), 1e-12)) + 1e-12)
    delta = np.zeros(H.shape[0])
    if dense:
        delta[free] = dense_solve(Hf.toarray(), -g[free])
    else:
        delta[free] = spla.splu(Hf.tocsc()).solve(-g[free])
    return delta


def pair_ids(block_a: np.ndarray, block_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique unordered block pairs: (pair_id (K,), pair_ab (P, 2)) with block_a ≠ block_b."""
    ab = np.stack([block_a, block_b], 1)
    uniq, inv = np.unique(ab, axis=0, return_inverse=True)
    return inv.reshape(-1), uniq
