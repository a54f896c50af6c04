"""Scene graph: every graph type's pair count and connectivity, the retrieval graph, the connectivity fix."""

from __future__ import annotations

import logging

import networkx as nx
import numpy as np
import pytest

from sfm3r.errors import InputError
from sfm3r.sfm.graph import scene_graph as sg


def names_of(n: int) -> list[str]:
    return [f"img_{i:03d}.jpg" for i in range(n)]


def clustered_similarity(sizes: list[int], seed: int = 0, within: float = 0.5) -> np.ndarray:
    """Block similarity: images of one cluster ~within, across clusters ~0.05 (non-symmetric noise)."""
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(len(sizes)), sizes)
    n = len(label)
    s = np.where(label[:, None] == label[None, :], within, 0.0) + 0.05 * rng.random((n, n))
    np.fill_diagonal(s, 1.0)
    return s.astype(np.float32)


def is_connected(pairs) -> bool:
    g = nx.Graph()
    g.add_nodes_from(pairs.names)
    g.add_edges_from(pairs.pairs)
    return nx.is_connected(g)


def check_invariants(pairs) -> None:
    index = {n: i for i, n in enumerate(pairs.names)}
    keys = [(index[a], index[b]) for a, b in pairs.pairs]
    assert all(i < j for i, j in keys), "pairs oriented by input order, no self pairs"
    assert keys == sorted(set(keys)), "de-duplicated and sorted"
    assert len(pairs.scores) == len(pairs.sources) == len(pairs)


@pytest.mark.parametrize(
    ("graph", "n", "expected"),
    [
        ("complete", 12, 66),
        ("swin-3", 12, 36),  # cyclic: N·W when N > 2W
        ("swin-3-noncyclic", 12, 3 * 12 - 6),  # W·N − W(W+1)/2
        ("swin", 12, 36),  # default W = 3
        ("swin-20", 12, 66),  # window beyond N: complete
        ("logwin-3", 20, 60),  # offsets 1, 2, 4, cyclic: N·W
        ("logwin-3-noncyclic", 20, 19 + 18 + 16),
        ("logwin-10", 8, 8 * 3 - 4),  # offsets 1, 2, 4 (8.. dropped); offset 4 is its own mirror when N = 8
        ("oneref-0", 12, 11),
        ("oneref-5", 12, 11),
    ],
)
def test_graph_pair_counts_and_connectivity(graph, n, expected):
    pairs = sg.make_pairs(names_of(n), graph)
    assert len(pairs) == expected
    check_invariants(pairs)
    assert is_connected(pairs)
    assert np.isnan(pairs.scores).all()  # no similarity given
    assert set(pairs.sources) == {graph.split("-")[0]}


def test_swin_wraps_around_only_when_cyclic():
    names = names_of(6)
    assert ("img_000.jpg", "img_005.jpg") in sg.make_pairs(names, "swin-1").pairs
    assert ("img_000.jpg", "img_005.jpg") not in sg.make_pairs(names, "swin-1-noncyclic").pairs


def test_oneref_is_a_star_around_the_reference():
    pairs = sg.make_pairs(names_of(5), "oneref-2")
    assert all("img_002.jpg" in p for p in pairs.pairs)


@pytest.mark.parametrize("bad", ["", "swin-x", "fullgraph", "retrieval-20", "oneref-a", "logwin--3", "swin-0"])
def test_bad_graph_string_lists_the_valid_forms(bad):
    with pytest.raises(InputError, match="swin-W|at least 1"):
        sg.parse_graph(bad)


def test_parser_reads_every_field():
    assert sg.parse_graph("swin-5-noncyclic") == sg.GraphSpec(kind="swin", window=5, cyclic=False)
    assert sg.parse_graph("logwin-4") == sg.GraphSpec(kind="logwin", window=4)
    assert sg.parse_graph("oneref-7") == sg.GraphSpec(kind="oneref", ref=7)
    assert sg.parse_graph("retrieval-15-8") == sg.GraphSpec(kind="retrieval", num_keys=15, num_neighbours=8)
    assert sg.parse_graph("retrieval") == sg.GraphSpec(kind="retrieval", num_keys=20, num_neighbours=10)


def test_retrieval_without_similarity_is_a_clear_error():
    with pytest.raises(InputError, match="similarity"):
        sg.make_pairs(names_of(5), "retrieval-2-2")


def test_oneref_out_of_range_and_bad_similarity_shape_are_errors():
    with pytest.raises(InputError, match="out of range"):
        sg.make_pairs(names_of(3), "oneref-3")
    with pytest.raises(InputError, match=r"\(4, 4\)"):
        sg.make_pairs(names_of(4), "complete", np.eye(3))
    with pytest.raises(InputError, match="unique"):
        sg.make_pairs(["a", "b", "a"], "complete")


def test_retrieval_graph_structure():
    """Key clique + every image attached to a key + K real neighbours each; size bound of §2.2."""
    n, na, k = 30, 4, 3
    sim = clustered_similarity([10, 10, 10])
    pairs = sg.make_pairs(names_of(n), f"retrieval-{na}-{k}", sim)
    check_invariants(pairs)
    assert is_connected(pairs)
    assert pairs.sources.count("key") == na * (na - 1) // 2
    assert len(pairs) <= na * (na - 1) // 2 + (n - na) + n * k
    deg = {name: 0 for name in pairs.names}
    for a, b in pairs.pairs:
        deg[a] += 1
        deg[b] += 1
    assert min(deg.values()) >= k  # self excluded: k real neighbours
    # kNN pairs stay within clusters; farthest-point sampling puts keys in every cluster
    label = np.repeat(np.arange(3), 10)
    index = {nm: i for i, nm in enumerate(pairs.names)}
    for (a, b), src in zip(pairs.pairs, pairs.sources):
        if src in ("knn", "key-link"):
            assert label[index[a]] == label[index[b]]
    keys = {index[x] for p, s in zip(pairs.pairs, pairs.sources) if s == "key" for x in p}
    assert {label[i] for i in keys} == {0, 1, 2}
    # scores are the symmetrised similarity
    sym = 0.5 * (sim + sim.T)
    i, j = index[pairs.pairs[0][0]], index[pairs.pairs[0][1]]
    assert pairs.scores[0] == pytest.approx(sym[i, j])


def test_retrieval_farthest_point_starts_from_most_central_image():
    sim = clustered_similarity([3, 6])  # the 6-image cluster holds the most central image
    sim[7, :] += 0.2  # image 7 is the most similar to everything
    pairs = sg.make_pairs(names_of(9), "retrieval-1-0", sim)
    assert all("img_007.jpg" in p for p in pairs.pairs)  # one key = image 7, everyone linked to it
    assert len(pairs) == 8


def test_retrieval_clips_na_and_k_to_the_image_count():
    sim = clustered_similarity([5])
    pairs = sg.make_pairs(names_of(5), "retrieval-50-50", sim)
    assert len(pairs) == 10  # complete, not an error


def test_graphs_are_deterministic():
    sim = clustered_similarity([7, 8, 9], seed=3)
    for graph in ("retrieval-5-3", "retrieval-0-2", "logwin-3", "complete"):
        a, ra = sg.build_scene_graph(names_of(24), graph, sim)
        b, rb = sg.build_scene_graph(names_of(24), graph, sim.copy())
        assert a.pairs == b.pairs and a.sources == b.sources
        np.testing.assert_array_equal(a.scores, b.scores)
        assert ra == rb


def test_connectivity_fix_bridges_block_diagonal_similarity(caplog):
    """retrieval-0-K (kNN only) on 3 disconnected blocks -> 2 bridging pairs, the most similar ones."""
    sim = clustered_similarity([4, 5, 6], seed=1)
    sim[:4, 4:] = sim[4:, :4] = 0.0
    sim[4:9, 9:] = sim[9:, 4:9] = 0.0
    sim[2, 7] = sim[7, 2] = 0.2  # best link between blocks 0 and 1
    sim[6, 12] = 0.3  # best link between blocks 1 and 2 (non-symmetric: mean 0.15)
    sim[1, 13] = sim[13, 1] = 0.1  # a weaker link between blocks 0 and 2
    names = names_of(15)
    raw = sg.make_pairs(names, "retrieval-0-3", sim)
    assert not is_connected(raw)
    with caplog.at_level(logging.WARNING, logger="sfm3r.sfm.graph.scene_graph"):
        pairs, report = sg.build_scene_graph(names, "retrieval-0-3", sim)
    assert is_connected(pairs)
    assert report.components_before == 3
    assert set(report.added) == {("img_002.jpg", "img_007.jpg"), ("img_006.jpg", "img_012.jpg")}
    assert [s for s in pairs.sources if s == "connectivity"] == ["connectivity"] * 2
    assert len(pairs) == len(raw) + 2
    assert "img_002.jpg–img_007.jpg" in caplog.text
    check_invariants(pairs)


def test_connectivity_fix_without_similarity_links_neighbours_in_input_order():
    names = names_of(6)
    pairs = sg.make_pairs(names, "complete")
    # keep only two islands {0,1,2} and {3,4,5}
    keep = [k for k, (a, b) in enumerate(pairs.pairs) if (a < "img_003") == (b < "img_003")]
    from sfm3r.types import Pairs

    islands = Pairs(
        names=pairs.names,
        pairs=tuple(pairs.pairs[k] for k in keep),
        scores=pairs.scores[keep],
        sources=tuple(pairs.sources[k] for k in keep),
    )
    fixed, added = sg.ensure_connected(islands)
    assert added == (("img_002.jpg", "img_003.jpg"),)
    assert is_connected(fixed)


def test_connected_graph_is_left_unchanged():
    pairs = sg.make_pairs(names_of(8), "swin-2")
    fixed, added = sg.ensure_connected(pairs)
    assert added == () and fixed is pairs


def test_isolated_images_get_connected():
    sim = clustered_similarity([10])
    names = names_of(10)
    pairs = sg.make_pairs(names, "retrieval-0-0", sim)  # no pairs at all
    assert len(pairs) == 0
    fixed, added = sg.ensure_connected(pairs, sim)
    assert len(added) == 9 and is_connected(fixed)


def test_one_and_two_images():
    for graph in ("complete", "swin-3", "logwin-2", "oneref-0"):
        pairs, report = sg.build_scene_graph(["a.jpg"], graph)
        assert len(pairs) == 0 and report.components_before == 1 and report.num_added == 0
        pairs, report = sg.build_scene_graph(["a.jpg", "b.jpg"], graph)
        assert pairs.pairs == (("a.jpg", "b.jpg"),)
    pairs, _ = sg.build_scene_graph(["a.jpg"], "retrieval-20-10", np.ones((1, 1)))
    assert len(pairs) == 0
    pairs, report = sg.build_scene_graph(["a.jpg", "b.jpg"], "retrieval-20-10", np.eye(2))
    assert pairs.pairs == (("a.jpg", "b.jpg"),) and report.degree_min == 1
    with pytest.raises(InputError, match="without images"):
        sg.build_scene_graph([], "complete")


def test_graph_report_counts():
    pairs, report = sg.build_scene_graph(names_of(10), "swin-2-noncyclic")
    assert report.num_images == 10 and report.num_pairs == len(pairs) == 17
    assert (report.degree_min, report.degree_max) == (2, 4)
    assert report.degree_mean == pytest.approx(2 * 17 / 10)
    assert report.pairs_by_source == {"swin": 17}


@pytest.mark.parametrize("seed", range(5))
def test_components_agree_with_networkx_and_are_numbered_by_lowest_image(seed):
    rng = np.random.default_rng(seed)
    n = 40
    pairs = [tuple(int(v) for v in rng.choice(n, 2, replace=False)) for _ in range(25)]
    label = sg._components(n, pairs)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(pairs)
    expected = sorted(nx.connected_components(g), key=min)
    assert label.shape == (n,) and label.dtype == np.int64
    assert [set(np.flatnonzero(label == c).tolist()) for c in range(label.max() + 1)] == expected
    assert sg._components(0, []).shape == (0,)
