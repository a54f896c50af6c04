"""The scene graph: which unordered image pairs get matched (SFM_ALGORITHM.md §2).

Graph strings (``make_pairs``), N images in input order:

- ``complete``: all N(N−1)/2 pairs.
- ``swin-W[-noncyclic]``: image i with i+1 … i+W; cyclic by default (indices wrap, closing the loop
  of a turntable or walk-around capture). ``swin`` alone means W = 3.
- ``logwin-W[-noncyclic]``: image i with i+1, i+2, i+4, …, i+2^(W−1) (offsets ≥ N dropped); cyclic
  by default. ``logwin`` alone means W = 3.
- ``oneref-R``: a star around image R (0-based); ``oneref`` means R = 0.
- ``retrieval-NA-K``: needs the (N, N) similarity (``sfm.graph.retrieval``): NA key images chosen by
  farthest-point sampling on ``1 − sim``, all pairs among the keys, every other image linked to its
  most similar key, and every image linked to its K most similar *other* images. ``retrieval`` alone
  means NA = 20, K = 10 (MASt3R-SfM's demo defaults). NA is clipped to N and K to N − 1.

Differences from the official code, all for determinism and honesty: farthest-point sampling starts
from the most central image (highest mean similarity to the others) instead of a random one; the
kNN step excludes the image itself, so K means K real neighbours; the similarity is symmetrised,
``(sim + simᵀ)/2``, because pairs are unordered (ASMK's raw matrix is not symmetric).

Pairs are de-duplicated, oriented so that name_i precedes name_j in ``names``, and sorted by
(index_i, index_j). ``Pairs.sources`` says how each was chosen: "complete", "swin", "logwin",
"oneref", "key" (key-image clique), "key-link" (non-key image to its nearest key), "knn",
"connectivity" (added by :func:`ensure_connected`) or "file" (``io.pairs_file``); a pair chosen by
several rules keeps the first of key, key-link, knn. ``Pairs.scores`` is the symmetrised
similarity, NaN without one.

Single images: 1 image gives no pairs (the pipeline reports that one image cannot be reconstructed);
2 images give their one pair for every graph type.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sfm3r.errors import InputError
from sfm3r.types import Pairs

logger = logging.getLogger(__name__)

__all__ = [
    "GRAPH_FORMS",
    "GraphReport",
    "GraphSpec",
    "build_scene_graph",
    "ensure_connected",
    "make_pairs",
    "parse_graph",
]

GRAPH_FORMS = (
    "complete",
    "swin-W[-noncyclic]",
    "logwin-W[-noncyclic]",
    "oneref-R",
    "retrieval-NA-K",
)
_DEFAULT_WINDOW, _DEFAULT_KEYS, _DEFAULT_NEIGHBOURS = 3, 20, 10
_GRAPH_RE = re.compile(
    r"^(?:(?P<complete>complete)"
    r"|(?P<win>swin|logwin)(?:-(?P<w>\d+))?(?P<noncyclic>-noncyclic)?"
    r"|oneref(?:-(?P<ref>\d+))?(?P<oneref>)"
    r"|retrieval(?:-(?P<na>\d+)-(?P<k>\d+))?(?P<retrieval>))$"
)
_SOURCE_ORDER = ("key", "key-link", "knn")  # priority when one pair is chosen by several rules
_CONNECT_CHUNK = 1024  # rows of the similarity processed at once when bridging components


@dataclass(frozen=True, kw_only=True)
class GraphSpec:
    """A parsed graph string (see the module docstring for the meaning of each field)."""

    kind: str  # "complete", "swin", "logwin", "oneref" or "retrieval"
    window: int = _DEFAULT_WINDOW  # swin / logwin
    cyclic: bool = True  # swin / logwin
    ref: int = 0  # oneref
    num_keys: int = _DEFAULT_KEYS  # retrieval: NA
    num_neighbours: int = _DEFAULT_NEIGHBOURS  # retrieval: K


@dataclass(frozen=True, kw_only=True)
class GraphReport:
    """What :func:`build_scene_graph` built, for logs and run.json."""

    graph: str  # the graph string as given
    num_images: int
    num_pairs: int  # after the connectivity fix
    degree_min: int  # pairs per image, after the fix
    degree_mean: float
    degree_max: int
    components_before: int  # connected components before the fix (1 = it was connected)
    added: tuple[tuple[str, str], ...]  # pairs added by the connectivity fix
    pairs_by_source: dict  # source -> pair count

    @property
    def num_added(self) -> int:
        return len(self.added)


def parse_graph(graph: str) -> GraphSpec:
    """Parse a graph string such as ``swin-5-noncyclic`` or ``retrieval-20-10``.

    Raises:
        InputError: for an unknown form, listing the valid ones.
    """
    m = _GRAPH_RE.match(graph.strip().lower()) if isinstance(graph, str) else None
    if m is None:
        raise InputError(
            f"unknown scene graph {graph!r}; valid forms: {', '.join(GRAPH_FORMS)} "
            "(W, R, NA, K are integers, e.g. 'swin-5', 'logwin-4-noncyclic', 'oneref-0', 'retrieval-20-10')"
        )
    if m["complete"]:
        return GraphSpec(kind="complete")
    if m["win"]:
        w = int(m["w"]) if m["w"] else _DEFAULT_WINDOW
        if w < 1:
            raise InputError(f"scene graph {graph!r}: the window W must be at least 1")
        return GraphSpec(kind=m["win"], window=w, cyclic=not m["noncyclic"])
    if m["oneref"] is not None:
        return GraphSpec(kind="oneref", ref=int(m["ref"]) if m["ref"] else 0)
    na = int(m["na"]) if m["na"] else _DEFAULT_KEYS
    k = int(m["k"]) if m["k"] else _DEFAULT_NEIGHBOURS
    return GraphSpec(kind="retrieval", num_keys=na, num_neighbours=k)


def _check_names(names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(names)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"image names must be unique; repeated: {', '.join(dup[:5])}")
    return names


def _symmetric(similarity: np.ndarray | None, n: int) -> np.ndarray | None:
    """(N, N) similarity -> (sim + simᵀ)/2 as float64, after checking its shape and values."""
    if similarity is None:
        return None
    s = np.asarray(similarity, dtype=np.float64)
    if s.shape != (n, n):
        raise InputError(f"the similarity matrix must be ({n}, {n}) for {n} images, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise InputError("the similarity matrix contains NaN or infinite values")
    return 0.5 * (s + s.T)


def _window_pairs(n: int, offsets: Sequence[int], cyclic: bool) -> list[tuple[int, int]]:
    out = []
    for i in range(n):
        for o in offsets:
            j = i + o
            if cyclic:
                j %= n
            elif j >= n:
                continue
            if j != i:
                out.append((min(i, j), max(i, j)))
    return out


def _farthest_keys(sym: np.ndarray, num_keys: int) -> list[int]:
    """Farthest-point sampling on 1 − sim, starting from the most central image; ties -> lowest index."""
    n = len(sym)
    off = sym.copy()
    np.fill_diagonal(off, 0.0)
    centrality = off.sum(axis=1) / max(n - 1, 1)
    keys = [int(np.argmax(centrality))]
    dist = 1.0 - sym
    min_dist = dist[keys[0]].copy()
    while len(keys) < num_keys:
        min_dist[keys] = -np.inf
        nxt = int(np.argmax(min_dist))
        keys.append(nxt)
        min_dist = np.minimum(min_dist, dist[nxt])
    return keys


def _retrieval_pairs(sym: np.ndarray, num_keys: int, k: int) -> list[tuple[tuple[int, int], str]]:
    n = len(sym)
    out: list[tuple[tuple[int, int], str]] = []
    keys = _farthest_keys(sym, num_keys) if num_keys > 0 else []
    for a, i in enumerate(keys):
        for j in keys[a + 1 :]:
            out.append(((min(i, j), max(i, j)), "key"))
    if keys:
        key_arr = np.array(keys)
        is_key = np.zeros(n, bool)
        is_key[key_arr] = True
        for i in np.flatnonzero(~is_key):
            j = int(key_arr[np.argmax(sym[i, key_arr])])
            out.append(((min(i, j), max(i, j)), "key-link"))
    if k > 0:
        s = sym.copy()
        np.fill_diagonal(s, -np.inf)
        nn = np.argsort(-s, axis=1, kind="stable")[:, :k]
        for i in range(n):
            for j in nn[i]:
                out.append(((min(i, int(j)), max(i, int(j))), "knn"))
    return out


def _to_pairs(names: tuple[str, ...], chosen: dict[tuple[int, int], str], sym: np.ndarray | None) -> Pairs:
    keys = sorted(chosen)
    if sym is None:
        scores = np.full(len(keys), np.nan, np.float32)
    else:
        idx = np.array(keys, dtype=np.int64).reshape(-1, 2)
        scores = sym[idx[:, 0], idx[:, 1]].astype(np.float32)
    return Pairs(
        names=names,
        pairs=tuple((names[i], names[j]) for i, j in keys),
        scores=scores,
        sources=tuple(chosen[p] for p in keys),
    )


def make_pairs(names: Sequence[str], graph: str, similarity: np.ndarray | None = None) -> Pairs:
    """Build the scene graph ``graph`` over ``names`` (see the module docstring).

    Args:
        names: N unique image names, in input (capture) order; windows follow this order.
        graph: graph string, e.g. ``complete``, ``swin-5``, ``retrieval-20-10``.
        similarity: (N, N) image similarity (row = query), required by ``retrieval``; when given,
            it also fills ``Pairs.scores``.

    Returns:
        The pairs, unordered and de-duplicated, sorted by (index_i, index_j). Not necessarily
        connected (e.g. ``retrieval-0-K``): see :func:`ensure_connected`.
    """
    spec = parse_graph(graph)
    names = _check_names(names)
    n = len(names)
    sym = _symmetric(similarity, n)
    chosen: dict[tuple[int, int], str] = {}
    if spec.kind == "complete":
        for i in range(n):
            for j in range(i + 1, n):
                chosen[(i, j)] = "complete"
    elif spec.kind == "swin":
        offsets = range(1, min(spec.window, max(n - 1, 0)) + 1)
        chosen = dict.fromkeys(_window_pairs(n, offsets, spec.cyclic), "swin")
    elif spec.kind == "logwin":
        offsets = [2**e for e in range(spec.window) if 2**e < n]
        chosen = dict.fromkeys(_window_pairs(n, offsets, spec.cyclic), "logwin")
    elif spec.kind == "oneref":
        if n > 0 and not 0 <= spec.ref < n:
            raise InputError(f"scene graph {graph!r}: reference image {spec.ref} is out of range 0..{n - 1}")
        chosen = {(min(spec.ref, j), max(spec.ref, j)): "oneref" for j in range(n) if j != spec.ref}
    else:  # retrieval
        if sym is None:
            raise InputError(
                f"scene graph {graph!r} needs an image similarity matrix: enable retrieval "
                "(MASt3R retrieval or weight-free SIFT) or choose a graph that needs none, e.g. 'swin-5' or 'complete'"
            )
        if n > 1:
            na, k = min(spec.num_keys, n), min(spec.num_neighbours, n - 1)
            for pair, src in sorted(
                _retrieval_pairs(sym, na, k), key=lambda ps: _SOURCE_ORDER.index(ps[1])
            ):
                chosen.setdefault(pair, src)
    return _to_pairs(names, chosen, sym)


class _UnionFind:
    """Disjoint sets over 0..n-1 whose root is always the set's lowest member (the lower root wins a union).

    Used instead of networkx: every run, a cached rerun included, checks its graph's connectivity, and
    importing networkx alone costs ~0.1 s.
    """

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]  # path halving
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> bool:
        """Join the sets of a and b; False when they were already one."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True


def _components(n: int, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """(N,) int64 component label of each image, components numbered by their lowest image index."""
    sets = _UnionFind(n)
    for i, j in pairs:
        sets.union(int(i), int(j))
    roots = np.array([sets.find(a) for a in range(n)], np.int64)
    return np.unique(roots, return_inverse=True)[1].astype(np.int64).reshape(n)


def _bridge_candidates(label: np.ndarray, sym: np.ndarray | None) -> list[tuple[float, int, int]]:
    """For each component, its best (score, i, j) pair, i < j, to another component (Borůvka step).

    Best = highest score; ties go to the lowest (i, j), so the choice is deterministic.
    """
    n = len(label)
    best: dict[int, tuple[float, int, int]] = {}
    cols = np.arange(n)
    for s in range(0, n, _CONNECT_CHUNK):
        rows = np.arange(s, min(s + _CONNECT_CHUNK, n))
        # without a similarity, prefer images close in input order (captures are usually sequential)
        score = sym[rows].copy() if sym is not None else -np.abs(rows[:, None] - cols[None, :]).astype(np.float64)
        score[label[rows][:, None] == label[None, :]] = -np.inf
        for i, j in zip(rows, np.argmax(score, axis=1)):  # ties -> lowest j
            cand = (float(score[i - s, j]), int(min(i, j)), int(max(i, j)))
            for c in (int(label[i]), int(label[j])):  # the pair is a candidate of both its components
                if c not in best or _rank(cand) < _rank(best[c]):
                    best[c] = cand
    return list(best.values())


def _rank(cand: tuple[float, int, int]) -> tuple[float, int, int]:
    """Sort key of a bridging candidate: best score first, then lowest (i, j)."""
    return (-cand[0], cand[1], cand[2])


def ensure_connected(
    pairs: Pairs, similarity: np.ndarray | None = None
) -> tuple[Pairs, tuple[tuple[str, str], ...]]:
    """Make the pair graph connected by adding the most similar pairs between its components.

    Greedy, like Kruskal/Borůvka on the components: repeatedly each component proposes its most
    similar pair to another component; proposals are added best first, skipping those whose
    components got joined already, until one component remains. The added pairs therefore form a
    maximum-similarity spanning tree of the components. Without a similarity, images closest in
    input order are linked (captures are usually sequential).

    Args:
        pairs: the graph; every image of ``pairs.names`` is a node (an image in no pair is its own
            component).
        similarity: (N, N) similarity over ``pairs.names`` (row = query), or None.

    Returns:
        (connected pairs, the added pairs), the added ones with source "connectivity". Logged.
    """
    names = pairs.names
    n = len(names)
    sym = _symmetric(similarity, n)
    index = {name: i for i, name in enumerate(names)}
    edges = [(index[a], index[b]) for a, b in pairs.pairs]
    label = _components(n, edges)
    if n == 0 or label.max() == 0:
        return pairs, ()
    num_components = int(label.max()) + 1
    merged = _UnionFind(num_components)
    added: list[tuple[int, int]] = []
    remaining = num_components
    while remaining > 1:
        current = np.array([merged.find(int(c)) for c in label])
        for _, i, j in sorted(_bridge_candidates(current, sym), key=_rank):
            if merged.union(int(label[i]), int(label[j])):
                added.append((i, j))
                remaining -= 1
    chosen = {(index[a], index[b]): src for (a, b), src in zip(pairs.pairs, pairs.sources)}
    chosen.update(dict.fromkeys(added, "connectivity"))
    out = _to_pairs(names, chosen, sym)
    if sym is None:  # keep the scores the input pairs had (e.g. from a file), NaN for the new ones
        old = {p: s for p, s in zip(pairs.pairs, pairs.scores)}
        out = Pairs(
            names=out.names,
            pairs=out.pairs,
            scores=np.array([old.get(p, np.nan) for p in out.pairs], np.float32),
            sources=out.sources,
        )
    added_names = tuple((names[i], names[j]) for i, j in sorted(added))
    logger.warning(
        "the scene graph had %d disconnected parts; added %d bridging pair(s): %s",
        num_components,
        len(added_names),
        ", ".join(f"{a}–{b}" for a, b in added_names),
    )
    return out, added_names


def _degrees(pairs: Pairs) -> np.ndarray:
    index = {name: i for i, name in enumerate(pairs.names)}
    deg = np.zeros(len(pairs.names), np.int64)
    for a, b in pairs.pairs:
        deg[index[a]] += 1
        deg[index[b]] += 1
    return deg


def build_scene_graph(
    names: Sequence[str], graph: str, similarity: np.ndarray | None = None
) -> tuple[Pairs, GraphReport]:
    """Build the scene graph and make it connected: what the pipeline calls.

    Args:
        names: N ≥ 1 unique image names in input order.
        graph: graph string (see :data:`GRAPH_FORMS` and the module docstring).
        similarity: (N, N) image similarity, required for ``retrieval-…``.

    Returns:
        (connected pairs, report). One image gives no pairs (nothing to reconstruct from).
    """
    names = _check_names(names)
    if not names:
        raise InputError("cannot build a scene graph without images: the image list is empty")
    pairs = make_pairs(names, graph, similarity)
    index = {name: i for i, name in enumerate(names)}
    before = int(_components(len(names), [(index[a], index[b]) for a, b in pairs.pairs]).max()) + 1
    pairs, added = ensure_connected(pairs, similarity)
    if len(names) == 1:
        logger.warning("only one image (%s): no pairs to match, nothing can be reconstructed", names[0])
    deg = _degrees(pairs)
    by_source: dict[str, int] = {}
    for s in pairs.sources:
        by_source[s] = by_source.get(s, 0) + 1
    report = GraphReport(
        graph=graph,
        num_images=len(names),
        num_pairs=len(pairs),
        degree_min=int(deg.min()),
        degree_mean=float(deg.mean()),
        degree_max=int(deg.max()),
        components_before=before,
        added=added,
        pairs_by_source=by_source,
    )
    logger.info(
        "scene graph %s: %d images, %d pairs, degree %d/%.1f/%d (min/mean/max)%s",
        graph,
        report.num_images,
        report.num_pairs,
        report.degree_min,
        report.degree_mean,
        report.degree_max,
        f", {report.num_added} pair(s) added for connectivity" if added else "",
    )
    return pairs, report
