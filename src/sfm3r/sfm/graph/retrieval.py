"""Image retrieval: an (N, N) image similarity from per-image local features, by ASMK.

ASMK (Tolias et al., "Aggregated Selective Match Kernels", binary variant ASMK*) as used by
MASt3R-SfM to choose image pairs (SFM_ALGORITHM.md §2.1, MAST3R_NETWORK.md §5.4):

1. every local feature is assigned to its nearest codebook centroid(s) ("visual words"), exact L2;
   database side 1 word per feature, query side 5 (multiple assignment);
2. per image and word, the residuals ``feature − centroid`` of the features assigned to that word are
   summed and binarised (``> 0``), one bit per dimension;
3. a query word matches the same word of a database image with ``s = 1 − 2·hamming/D`` in [−1, 1],
   kept only if ``s ≥ threshold`` (0) and raised to ``α`` (3);
4. ``sim[q, d] = Σ_words s^α / sqrt(#words of d) / sqrt(#words of q)`` (no IDF).

The same image set is database and query, so ``sim[q, d]`` is *not* symmetric (different multiple
assignment); :func:`sfm3r.sfm.graph.scene_graph.make_pairs` symmetrises it. The scores equal those of the
``asmk`` package with MASt3R's parameters (tested against it), but the all-to-all scoring here is
vectorised per visual word (XOR + popcount of all query × database signatures of that word) instead
of looping in Python per query, and word assignment batches many images per faiss call
(``asmk``'s query took ~130 ms per image for 1000 SIFT features; benchmarks/scene_graph_scaling.py
measures the whole similarity at ~30–40 ms per image for 100–1000 images × 500 features).

Two feature sources, both plain arrays in:

- **MASt3R retrieval features** with the checkpoint's codebook: :func:`asmk_similarity` (the
  features are used exactly as given; they and the codebook must come from the same model);
- **weight-free SIFT**: :func:`sift_retrieval` takes RootSIFT descriptors, trains a codebook on the
  image set itself (seeded faiss k-means on a subsample, size from :func:`codebook_size_for`) and
  returns it with the similarity so the caller can cache it.

Everything is deterministic for the same input on the same machine (seeded sampling and k-means,
stable sorts, sequential reductions).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from sfm3r.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "AsmkConf",
    "CodebookConf",
    "RetrievalResult",
    "asmk_similarity",
    "codebook_size_for",
    "root_sift",
    "sift_retrieval",
    "train_codebook",
]


@dataclass(frozen=True, kw_only=True)
class AsmkConf:
    """ASMK scoring parameters; the defaults are MASt3R-SfM's (SFM_ALGORITHM.md §10)."""

    alpha: float = 3.0  # selectivity exponent applied to each word similarity
    similarity_threshold: float = 0.0  # word similarities below this are ignored
    db_multiple_assignment: int = 1  # words per feature on the database side
    query_multiple_assignment: int = 5  # words per feature on the query side
    chunk_size: int = 16384  # features per word-assignment call (memory vs. speed)


@dataclass(frozen=True, kw_only=True)
class CodebookConf:
    """How :func:`train_codebook` builds a codebook from the image set itself."""

    size: int | None = None  # number of visual words; None: codebook_size_for(total descriptors)
    # k-means training subsample (at most size × this many descriptors) and iterations. Measured on templeRing
    # (47 images, 1,024 words, `benchmarks/retrieval_recall.py --sets middlebury_templeRing --kmeans 64:10`):
    # 64 / 10 (the asmk package's choice) 9.2 s, graph recall 0.948, R@10 0.923; 32 / 5: 3.6 s, 0.960, 0.936.
    points_per_centroid: int = 32
    niter: int = 5
    seed: int = 0  # seeds the subsample and the k-means initialisation


@dataclass(frozen=True, eq=False)
class RetrievalResult:
    """Result of :func:`sift_retrieval`."""

    similarity: np.ndarray  # (N, N) float32, row = query image, column = database image
    codebook: np.ndarray  # (K, D) float32 centroids (cache it to skip training next time)


# Codebook size rule for a self-trained codebook (see codebook_size_for).
_DESCRIPTORS_PER_WORD = 128  # ~ total descriptors / words (was 64: see codebook_size_for)
_MIN_WORDS = 256
_MAX_WORDS = 4096  # beyond this, assigning 1M+ descriptors costs minutes on a CPU for little gain


def codebook_size_for(num_descriptors: int) -> int:
    """Codebook size for a codebook trained on ``num_descriptors`` descriptors of the image set.

    Rule: the power of two nearest to ``num_descriptors / 128``, clipped to [256, 4096], and never
    more than ``num_descriptors`` (k-means needs at least one point per centroid); the cap keeps word
    assignment linear and affordable on a CPU for thousands of images. Examples: 10 images × 4000
    SIFT -> 256 words; 47 × 3000 -> 1024; 1000 × 1500 -> 4096. k-means costs ~ words² (its training
    sample is CodebookConf.points_per_centroid per word), and more words did not retrieve better here:
    templeRing (47 images, `benchmarks/retrieval_recall.py --sizes 256 512 2048`) graph recall 0.940 /
    0.956 / 0.960 / 0.960 with 256 / 512 / 1024 / 2048 words, in 1.3 / 2.0 / 4.0 / 13.0 s. (Until
    December 2026 the rule used 64 descriptors per word: 2048 words for templeRing's 141k SIFT in the
    pipeline, 4096 for a 50-image sequence, whose k-means then took ~100 s on this loaded 2-core machine.)
    """
    if num_descriptors < 1:
        raise InputError("cannot train a retrieval codebook from 0 descriptors: do the images have features?")
    target = num_descriptors / _DESCRIPTORS_PER_WORD
    size = 2 ** round(math.log2(max(target, 1.0)))
    size = min(max(size, _MIN_WORDS), _MAX_WORDS)
    return int(min(size, num_descriptors))


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """Raw SIFT descriptors (n, 128), any positive scale or dtype -> RootSIFT (n, 128) float32.

    RootSIFT (Arandjelović & Zisserman 2012): L1-normalise, then element-wise square root; the
    result has unit L2 norm, and Euclidean distance between RootSIFTs is the Hellinger kernel on
    the raw ones. Do not apply it twice: pycolmap's extractor already returns RootSIFT by default
    (``sift.normalization = L1_ROOT``; its uint8 descriptors are ``round(512 · rootsift)``), so
    for those just divide by 512 and L2-normalise.
    """
    d = np.asarray(descriptors, dtype=np.float32)
    if d.ndim != 2:
        raise InputError(f"SIFT descriptors must be a 2-D (n, D) array, got shape {d.shape}")
    if d.size and d.min() < 0:
        raise InputError("SIFT descriptors must be non-negative to compute RootSIFT")
    l1 = d.sum(axis=1, keepdims=True)
    return np.sqrt(d / np.maximum(l1, 1e-12)).astype(np.float32)


def _check_features(features: Sequence[np.ndarray], dim: int | None = None) -> list[np.ndarray]:
    """Validate a list of (n_i, D) arrays; return them as contiguous float32."""
    if len(features) == 0:
        raise InputError("retrieval needs at least one image, got an empty feature list")
    out = []
    for i, f in enumerate(features):
        f = np.ascontiguousarray(f, dtype=np.float32)
        if f.ndim != 2:
            raise InputError(f"local features of image {i} must be (n, D), got shape {f.shape}")
        if dim is None:
            dim = f.shape[1]
        if f.shape[1] != dim:
            raise InputError(f"local features of image {i} have dimension {f.shape[1]}, expected {dim}")
        if not np.isfinite(f).all():
            raise InputError(f"local features of image {i} contain NaN or infinite values")
        out.append(f)
    return out


def train_codebook(descriptors: Sequence[np.ndarray], conf: CodebookConf = CodebookConf()) -> np.ndarray:
    """Train a visual-word codebook on the image set itself with faiss k-means.

    Args:
        descriptors: per image (n_i, D) float32 local descriptors (RootSIFT for the SIFT path).
        conf: size (None: :func:`codebook_size_for` of the total count), subsample and seed.

    Returns:
        (K, D) float32 centroids. Deterministic for the same input and seed (on one machine).
    """
    import faiss  # local import: faiss is only needed here and in nothing else of the package

    feats = _check_features(descriptors)
    total = sum(f.shape[0] for f in feats)
    size = conf.size if conf.size is not None else codebook_size_for(total)
    if size < 1 or size > total:
        raise InputError(f"codebook size {size} must be between 1 and the number of descriptors ({total})")
    x = np.concatenate(feats, axis=0)
    n_train = min(total, size * conf.points_per_centroid)
    rng = np.random.default_rng(conf.seed)
    if n_train < total:
        x = x[np.sort(rng.choice(total, n_train, replace=False))]
    dim = x.shape[1]
    clus = faiss.Clustering(dim, size)
    clus.niter = conf.niter
    clus.seed = int(rng.integers(0, 2**31 - 1))
    clus.max_points_per_centroid = max(conf.points_per_centroid, n_train // size + 1)  # no re-subsampling
    clus.min_points_per_centroid = 1  # small image sets: no warning spam, the rule above sizes sensibly
    clus.verbose = False
    index = faiss.IndexFlatL2(dim)
    clus.train(np.ascontiguousarray(x), index)
    centroids = faiss.vector_float_to_array(clus.centroids).reshape(size, dim).astype(np.float32)
    logger.info("trained a %d-word codebook on %d of %d descriptors (dim %d)", size, n_train, total, dim)
    return centroids


class _WordAssigner:
    """Exact nearest-centroid search: faiss ``IndexFlatL2`` on CPU (2.5× faster than torch matmul +
    topk there, and what the asmk package uses), torch matmul + topk on a GPU."""

    def __init__(self, centroids: np.ndarray, device: str | torch.device, chunk: int):
        self.device = torch.device(device)
        self.chunk = chunk
        if self.device.type == "cpu":
            import faiss

            self.index = faiss.IndexFlatL2(centroids.shape[1])
            self.index.add(centroids)
        else:
            self.centroids = torch.from_numpy(centroids).to(self.device)
            self.sqnorm = (self.centroids * self.centroids).sum(dim=1)

    def __call__(self, x: np.ndarray, k: int) -> np.ndarray:
        """Nearest ``k`` centroids of each row of x (n, D), nearest first -> (n, k) int64."""
        if self.device.type == "cpu":
            return self.index.search(x, k)[1].astype(np.int64)
        return _assign_words_torch(x, self.centroids, self.sqnorm, k, self.chunk)


def _assign_batched(feats: list[np.ndarray], assign: _WordAssigner, k: int, batch_rows: int):
    """Yield (image index, features, (n_i, k) words) in order, searching several images per call
    (one faiss call per ~batch_rows features is ~3× faster than one call per image)."""
    start = 0
    while start < len(feats):
        stop, rows = start, 0
        while stop < len(feats) and (rows == 0 or rows + feats[stop].shape[0] <= batch_rows):
            rows += feats[stop].shape[0]
            stop += 1
        words = assign(np.concatenate(feats[start:stop]), k) if rows else np.zeros((0, k), np.int64)
        offsets = np.cumsum([0] + [f.shape[0] for f in feats[start:stop]])
        for i in range(start, stop):
            yield i, feats[i], words[offsets[i - start] : offsets[i - start + 1]]
        start = stop


def _assign_words_torch(
    x: np.ndarray, centroids: torch.Tensor, centroid_sqnorm: torch.Tensor, k: int, chunk: int
) -> np.ndarray:
    """Torch version of the nearest-centroid search (any device) -> (n, k) int64."""
    device = centroids.device
    out = np.empty((x.shape[0], k), dtype=np.int64)
    for s in range(0, x.shape[0], chunk):
        xb = torch.from_numpy(x[s : s + chunk]).to(device)
        # ||x - c||² = ||x||² - 2 x·c + ||c||²; ||x||² does not change the ranking of one row
        d = torch.addmm(centroid_sqnorm[None, :], xb, centroids.T, alpha=-2.0)
        out[s : s + chunk] = torch.topk(d, k, dim=1, largest=False, sorted=True).indices.cpu().numpy()
    return out


def _aggregate(x: np.ndarray, words: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ASMK aggregation of one image.

    Args:
        x: (n, D) float32 features; words: (n, m) int64 assigned words; centroids: (K, D) float32.

    Returns:
        unique words (u,) int64 sorted, and their binarised residual sums, packed (u, ceil(D/8)) uint8.
    """
    n, m = words.shape
    flat_words = words.reshape(-1)
    feat_idx = np.repeat(np.arange(n), m)
    order = np.argsort(flat_words, kind="stable")
    flat_words, feat_idx = flat_words[order], feat_idx[order]
    uniq, starts = np.unique(flat_words, return_index=True)
    residuals = x[feat_idx] - centroids[flat_words]
    # the residual sum of each word (its rows are consecutive): one product with a sparse 0/1 matrix, 4x faster
    # than np.add.reduceat over rows (30 vs 7 ms for 20,000 residuals; 100 orbit frames: 2.6 s -> 0.7 s)
    summing = sp.csr_matrix(
        (np.ones(flat_words.size, np.float32), np.arange(flat_words.size), np.append(starts, flat_words.size)),
        shape=(uniq.size, flat_words.size),
    )
    sums = summing @ residuals
    return uniq, np.packbits(sums > 0, axis=1)


@dataclass(frozen=True)
class _WordTable:
    """All (image, word, code) entries of one side (database or query), sorted by word then image."""

    words: np.ndarray  # (E,) int64
    images: np.ndarray  # (E,) int64
    codes: np.ndarray  # (E, ceil(D/8)) uint8 packed binary residual signatures
    words_per_image: np.ndarray  # (N,) int64


def _word_table(entries: list[tuple[np.ndarray, np.ndarray]]) -> _WordTable:
    words = np.concatenate([w for w, _ in entries])
    images = np.concatenate([np.full(len(w), i, dtype=np.int64) for i, (w, _) in enumerate(entries)])
    codes = np.concatenate([c for _, c in entries], axis=0)
    order = np.argsort(words, kind="stable")  # images stay ascending within a word
    counts = np.array([len(w) for w, _ in entries], dtype=np.int64)
    return _WordTable(words[order], images[order], codes[order], counts)


def _as_words64(codes: np.ndarray) -> np.ndarray:
    """Packed bit codes (E, B) uint8 -> (E, ceil(B/8)) uint64 (zero padded: padding never differs)."""
    pad = (-codes.shape[1]) % 8
    if pad:
        codes = np.concatenate([codes, np.zeros((codes.shape[0], pad), np.uint8)], axis=1)
    return np.ascontiguousarray(codes).view(np.uint64)


def _hamming(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(n_q, W), (n_d, W) uint64 packed signatures -> (n_q, n_d) int32 Hamming distances."""
    ham = np.zeros((q.shape[0], d.shape[0]), np.int32)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0: XOR + popcount, one 64-bit word at a time
        for w in range(q.shape[1]):
            ham += np.bitwise_count(q[:, w, None] ^ d[None, :, w])
        return ham
    for w in range(q.shape[1]):  # older numpy: popcount through a byte table
        x = (q[:, w, None] ^ d[None, :, w]).view(np.uint8).reshape(q.shape[0], d.shape[0], 8)
        ham += _POPCOUNT8[x].sum(axis=2, dtype=np.int32)
    return ham


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _kernel_table(dim: int, conf: AsmkConf) -> np.ndarray:
    """(D + 1,) float64 ASMK kernel value for each Hamming distance h: s = 1 − 2h/D, s^α if s ≥ thr."""
    s = 1.0 - 2.0 * np.arange(dim + 1) / dim
    return np.where(s >= conf.similarity_threshold, np.sign(s) * np.abs(s) ** conf.alpha, 0.0)


def _score(db: _WordTable, query: _WordTable, dim: int, num_images: int, conf: AsmkConf) -> np.ndarray:
    """All-to-all ASMK scores (N, N) float64, row = query, column = database.

    Per visual word, every query entry is compared with every database entry of that word at once
    (XOR + popcount of the packed signatures, then a lookup of the kernel value for each Hamming
    distance). This part costs O(Σ_words n_q·n_d), i.e. quadratic in N with a small constant; word
    assignment (linear in N) dominates up to a few hundred images.
    """
    sim = np.zeros((num_images, num_images), dtype=np.float64)
    common, db_first, q_first = np.intersect1d(db.words, query.words, assume_unique=False, return_indices=True)
    db_end = np.searchsorted(db.words, common, side="right")
    q_end = np.searchsorted(query.words, common, side="right")
    q_codes, db_codes = _as_words64(query.codes), _as_words64(db.codes)
    table = _kernel_table(dim, conf)
    for a, b, c, d in zip(q_first, q_end, db_first, db_end):
        k = table[_hamming(q_codes[a:b], db_codes[c:d])]
        sim[np.ix_(query.images[a:b], db.images[c:d])] += k
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.sqrt(query.words_per_image)[:, None] * np.sqrt(db.words_per_image)[None, :]
        sim = np.where(norm > 0, sim / norm, 0.0)
    return sim


def asmk_similarity(
    features: Sequence[np.ndarray],  # N × (n_i, D) float32 local features
    codebook: np.ndarray,  # (K, D) float32 centroids
    conf: AsmkConf = AsmkConf(),
    *,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """ASMK similarity of every image to every other from their local features.

    Args:
        features: per image (n_i, D) float32 local features (n_i may be 0: that image scores 0
            with everything). MASt3R retrieval features go in as produced by the model.
        codebook: (K, D) float32 centroids of the same feature space.
        conf: ASMK parameters (defaults = MASt3R-SfM's).
        device: where word assignment (the costly part, features × K × D) runs: "cpu" uses faiss,
            a GPU uses torch.

    Returns:
        (N, N) float32 ``sim[q, d]``, row = query image, column = database image; not symmetric.
        The diagonal holds each image's self-similarity (the largest of its row, typically).
    """
    cb = np.ascontiguousarray(codebook, dtype=np.float32)
    if cb.ndim != 2 or cb.shape[0] < 1:
        raise InputError(f"the retrieval codebook must be a (K, D) array of centroids, got shape {cb.shape}")
    feats = _check_features(features, dim=cb.shape[1])
    k_max = max(conf.db_multiple_assignment, conf.query_multiple_assignment)
    if min(conf.db_multiple_assignment, conf.query_multiple_assignment) < 1 or k_max > cb.shape[0]:
        raise InputError(
            f"multiple assignment must be between 1 and the codebook size {cb.shape[0]}, "
            f"got {conf.db_multiple_assignment} (database) / {conf.query_multiple_assignment} (query)"
        )
    num_images, dim = len(feats), cb.shape[1]
    assign = _WordAssigner(cb, device, conf.chunk_size)
    db_entries, q_entries = [], []
    for i, f, words in _assign_batched(feats, assign, k_max, conf.chunk_size):
        if f.shape[0] == 0:
            logger.warning("image %d has no local features: its retrieval similarity is 0", i)
            empty = (np.zeros(0, np.int64), np.zeros((0, (dim + 7) // 8), np.uint8))
            db_entries.append(empty)
            q_entries.append(empty)
            continue
        db_entries.append(_aggregate(f, words[:, : conf.db_multiple_assignment], cb))
        q_entries.append(_aggregate(f, words[:, : conf.query_multiple_assignment], cb))
    db = _word_table(db_entries)
    query = _word_table(q_entries)
    sim = _score(db, query, dim, num_images, conf)
    logger.info(
        "ASMK similarity of %d images: %.0f database / %.0f query words per image, codebook %d",
        num_images,
        db.words_per_image.mean(),
        query.words_per_image.mean(),
        cb.shape[0],
    )
    return sim.astype(np.float32)


def sift_retrieval(
    descriptors: Sequence[np.ndarray],  # N × (n_i, 128) float32 RootSIFT
    *,
    codebook: np.ndarray | None = None,  # (K, 128) float32, e.g. from a previous run's cache
    codebook_conf: CodebookConf = CodebookConf(),
    asmk_conf: AsmkConf = AsmkConf(),
    device: str | torch.device = "cpu",
) -> RetrievalResult:
    """Weight-free retrieval: ASMK on SIFT descriptors with a codebook trained on these images.

    Args:
        descriptors: per image (n_i, 128) RootSIFT descriptors (unit L2 norm; see :func:`root_sift`).
            About 2000–4000 per image (images at ~1024 px) works well.
        codebook: a cached codebook to reuse; None trains one (:func:`train_codebook`).
        codebook_conf, asmk_conf, device: see :func:`train_codebook` and :func:`asmk_similarity`.

    Returns:
        :class:`RetrievalResult` with the (N, N) similarity and the codebook used.
    """
    feats = _check_features(descriptors)
    if codebook is None:
        codebook = train_codebook(feats, codebook_conf)
    sim = asmk_similarity(feats, codebook, asmk_conf, device=device)
    return RetrievalResult(similarity=sim, codebook=np.asarray(codebook, dtype=np.float32))
