"""Retrieval: ASMK similarity (against the asmk package), codebook training, RootSIFT, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfm3r.errors import InputError
from sfm3r.sfm.graph import retrieval as R


def clustered_features(places: int = 4, per_place: int = 3, n: int = 80, dim: int = 64, seed: int = 0):
    """Images of one 'place' draw n of its 100 base descriptors (+ noise); unit L2 norm."""
    rng = np.random.default_rng(seed)
    pools = rng.normal(size=(places, 100, dim)).astype(np.float32)
    feats, place = [], []
    for img in range(places * per_place):
        p = img // per_place
        v = pools[p, rng.choice(100, n, replace=False)] + 0.2 * rng.normal(size=(n, dim)).astype(np.float32)
        feats.append((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))
        place.append(p)
    return feats, np.array(place)


@pytest.fixture(scope="module")
def data():
    feats, place = clustered_features()
    codebook = R.train_codebook(feats, R.CodebookConf(size=128))
    return feats, place, codebook


def test_images_of_one_place_are_most_similar(data):
    feats, place, codebook = data
    sim = R.asmk_similarity(feats, codebook)
    assert sim.shape == (len(feats), len(feats)) and sim.dtype == np.float32
    s = sim.copy()
    np.fill_diagonal(s, -np.inf)
    top = np.argsort(-s, axis=1)[:, :2]  # 2 other images per place
    assert (place[top] == place[:, None]).all()
    same = place[:, None] == place[None, :]
    np.fill_diagonal(same, False)
    off = ~same & ~np.eye(len(feats), dtype=bool)
    assert sim[same].min() > 3 * sim[off].max()  # clear margin (measured ~10x)
    # self-similarity is the largest of each row
    assert (np.argmax(sim, axis=1) == np.arange(len(feats))).all()


def test_matches_the_asmk_package(data):
    """Same codebook, MASt3R's parameters: our vectorised scores equal asmk's query_ivf scores."""
    asmk_method = pytest.importorskip("asmk.asmk_method")
    from asmk import codebook as asmk_codebook
    from asmk import index as asmk_index

    feats, _, codebook = data
    params = {
        "index": {"gpu_id": None},
        "train_codebook": {"codebook": {"size": len(codebook)}},
        "build_ivf": {
            "kernel": {"binary": True},
            "ivf": {"use_idf": False},
            "quantize": {"multiple_assignment": 1},
            "aggregate": {},
        },
        "query_ivf": {
            "quantize": {"multiple_assignment": 5},
            "aggregate": {},
            "search": {"topk": None},
            "similarity": {"similarity_threshold": 0.0, "alpha": 3.0},
        },
    }
    cb = asmk_codebook.Codebook(asmk_index.initialize_index(None), size=len(codebook))
    cb.index(codebook)
    method = asmk_method.ASMKMethod(params, {}, codebook=cb)
    vecs = np.concatenate(feats)
    ids = np.repeat(np.arange(len(feats)), [len(f) for f in feats])
    db = method.build_ivf(vecs, ids.copy())  # copy: asmk shifts the ids in place
    _, _, ranks, scores = db.query_ivf(vecs, ids.copy())
    expected = np.empty_like(scores)
    expected[np.arange(len(ranks))[:, None], ranks] = scores
    np.testing.assert_allclose(R.asmk_similarity(feats, codebook), expected, rtol=1e-5, atol=1e-7)


def test_torch_word_assignment_equals_faiss(data):
    """The GPU path (torch) finds the same nearest centroids as the CPU path (faiss)."""
    feats, _, codebook = data
    x = np.concatenate(feats)
    faiss_words = R._WordAssigner(codebook, "cpu", 4096)(x, 5)
    c = torch.from_numpy(codebook)
    torch_words = R._assign_words_torch(x, c, (c * c).sum(1), 5, chunk=1000)
    assert (faiss_words[:, 0] == torch_words[:, 0]).mean() > 0.999
    assert (np.sort(faiss_words, 1) == np.sort(torch_words, 1)).mean() > 0.99


def test_deterministic(data):
    feats, _, _ = data
    a = R.sift_retrieval(feats, codebook_conf=R.CodebookConf(size=32, seed=3))
    b = R.sift_retrieval([f.copy() for f in feats], codebook_conf=R.CodebookConf(size=32, seed=3))
    np.testing.assert_array_equal(a.codebook, b.codebook)
    np.testing.assert_array_equal(a.similarity, b.similarity)


def test_sift_retrieval_returns_and_reuses_its_codebook(data):
    feats, place, _ = data
    res = R.sift_retrieval(feats, codebook_conf=R.CodebookConf(size=48))
    assert res.codebook.shape == (48, feats[0].shape[1]) and res.codebook.dtype == np.float32
    again = R.sift_retrieval(feats, codebook=res.codebook)
    np.testing.assert_array_equal(again.similarity, res.similarity)


def test_codebook_size_rule():
    assert R.codebook_size_for(10 * 4000) == 256
    assert R.codebook_size_for(47 * 3000) == 1024
    assert R.codebook_size_for(50 * 3900) == 2048
    assert R.codebook_size_for(1000 * 1500) == 4096  # capped
    assert R.codebook_size_for(500) == 256  # floor
    assert R.codebook_size_for(100) == 100  # never more words than descriptors
    sizes = [R.codebook_size_for(n) for n in range(1, 10**6, 9973)]
    assert sizes == sorted(sizes)
    with pytest.raises(InputError):
        R.codebook_size_for(0)


def test_default_codebook_uses_the_rule():
    feats, _ = clustered_features(places=2, per_place=2, n=100, dim=16)
    res = R.sift_retrieval(feats)
    assert len(res.codebook) == R.codebook_size_for(400) == 256


def test_root_sift():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(50, 128)).astype(np.uint8)
    rs = R.root_sift(raw)
    assert rs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rs, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(rs**2, raw / raw.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    with pytest.raises(InputError, match="non-negative"):
        R.root_sift(-np.ones((2, 128)))


def test_one_and_two_images_and_empty_image(data):
    feats, _, codebook = data
    one = R.asmk_similarity(feats[:1], codebook)
    assert one.shape == (1, 1) and one[0, 0] > 0
    two = R.asmk_similarity(feats[:2], codebook)
    assert two.shape == (2, 2)
    with_empty = R.asmk_similarity([feats[0], np.zeros((0, codebook.shape[1]), np.float32), feats[1]], codebook)
    assert (with_empty[1] == 0).all() and (with_empty[:, 1] == 0).all()
    np.testing.assert_allclose(with_empty[np.ix_([0, 2], [0, 2])], two, rtol=1e-6)


def test_bad_inputs_are_clear_errors(data):
    feats, _, codebook = data
    with pytest.raises(InputError, match="dimension"):
        R.asmk_similarity([feats[0][:, :16]], codebook)
    with pytest.raises(InputError, match="empty"):
        R.asmk_similarity([], codebook)
    with pytest.raises(InputError, match="NaN"):
        R.asmk_similarity([np.full((3, codebook.shape[1]), np.nan, np.float32)], codebook)
    with pytest.raises(InputError, match="multiple assignment"):
        R.asmk_similarity(feats[:2], codebook[:3])
    with pytest.raises(InputError, match="codebook size"):
        R.train_codebook([feats[0][:10]], R.CodebookConf(size=11))


@pytest.mark.parametrize("dim", [128, 100, 1024])
def test_hamming_popcount_and_byte_table_fallback(dim, monkeypatch):
    """numpy ≥ 2 uses XOR + bitwise_count; older numpy a byte popcount table: same distances."""
    rng = np.random.default_rng(1)
    bits_q, bits_d = rng.random((7, dim)) > 0.5, rng.random((5, dim)) > 0.5
    q = R._as_words64(np.packbits(bits_q, axis=1))
    d = R._as_words64(np.packbits(bits_d, axis=1))
    expected = (bits_q[:, None, :] != bits_d[None, :, :]).sum(axis=2)
    if hasattr(np, "bitwise_count"):
        np.testing.assert_array_equal(R._hamming(q, d), expected)
        monkeypatch.delattr(np, "bitwise_count")
    np.testing.assert_array_equal(R._hamming(q, d), expected)


def test_kernel_table_follows_threshold_and_alpha():
    t = R._kernel_table(4, R.AsmkConf())  # h = 0..4 -> s = 1, .5, 0, -.5, -1
    np.testing.assert_allclose(t, [1.0, 0.125, 0.0, 0.0, 0.0])
    t = R._kernel_table(4, R.AsmkConf(alpha=1.0, similarity_threshold=-0.6))
    np.testing.assert_allclose(t, [1.0, 0.5, 0.0, -0.5, 0.0])


def test_batched_assignment_keeps_image_order(data):
    feats, _, codebook = data
    assign = R._WordAssigner(codebook, "cpu", 4096)
    parts = [f[: (7 + 13 * i) % 50] for i, f in enumerate(feats)]  # uneven sizes, one empty
    got = list(R._assign_batched(parts, assign, 2, batch_rows=70))
    assert [i for i, _, _ in got] == list(range(len(parts)))
    for (i, f, w), p in zip(got, parts):
        assert f is p and w.shape == (len(p), 2)
        if len(p):
            np.testing.assert_array_equal(w, assign(p, 2))


def test_aggregation_sums_each_words_residuals():
    """The binarised residual sum of every word an image's features are assigned to (several words per
    feature), against a plain loop."""
    from sfm3r.sfm.graph.retrieval import _aggregate

    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    centroids = rng.normal(size=(40, 16)).astype(np.float32)
    words = rng.integers(0, 40, size=(300, 3))
    uniq, codes = _aggregate(x, words, centroids)
    expected_words = np.unique(words)
    np.testing.assert_array_equal(uniq, expected_words)
    for row, word in enumerate(expected_words):
        features = np.flatnonzero((words == word).any(axis=1))
        total = sum((x[f] - centroids[word]) * np.count_nonzero(words[f] == word) for f in features)
        np.testing.assert_array_equal(np.unpackbits(codes[row])[:16], total > 0)
