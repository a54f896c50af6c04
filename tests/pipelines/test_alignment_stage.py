"""The cached alignment stage: the same inputs and options read the Scene back; any change recomputes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sfm3r.pipelines.alignment_stage import align_cached, alignment_key
from sfm3r.sfm.align.alignment import AlignConf, Refinement
from alignment_synthetic import make_pair_results, make_scene, neighbour_pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small():
    scene = make_scene(6, num_points=600, seed=3)
    pairs = make_pair_results(scene, neighbour_pairs(6, 2), max_matches=120, seed=4)
    return scene, pairs


def test_second_call_reads_the_same_scene_from_the_cache(small, tmp_path):
    scene, pairs = small
    conf = AlignConf(refine=Refinement.NONE)
    first, counts, key = align_cached(pairs, scene.images, conf, tmp_path)
    assert (counts.computed, counts.cached) == (1, 0)
    again, counts, key_again = align_cached(pairs, scene.images, conf, tmp_path)
    assert (counts.computed, counts.cached) == (0, 1) and key_again == key
    assert again.image_names == first.image_names and again.cameras == first.cameras
    for name in ("rotations", "translations", "points_xyz", "points_rgb", "points_error", "obs_point", "obs_xy"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert again.unregistered == first.unregistered
    assert again.info["timings"].keys() == first.info["timings"].keys()
    # another option: another namespace, computed again
    _, counts, _ = align_cached(pairs, scene.images, dataclasses.replace(conf, rotation_averaging=False), tmp_path)
    assert counts.computed == 1


def test_another_sfm3r_version_aligns_again(small, tmp_path, monkeypatch):
    """An upgrade must not read back the scene the older code aligned (the versions are in the namespace)."""
    import sfm3r

    scene, pairs = small
    conf = AlignConf(refine=Refinement.NONE)
    _, counts, _ = align_cached(pairs, scene.images, conf, tmp_path)
    assert counts.computed == 1
    monkeypatch.setattr(sfm3r, "__version__", sfm3r.__version__ + ".post1")
    _, counts, _ = align_cached(pairs, scene.images, conf, tmp_path)
    assert (counts.computed, counts.cached) == (1, 0)


def test_cached_scene_keeps_each_cameras_lens(small, tmp_path):
    from sfm3r.io import cache
    from sfm3r.types import Camera

    scene, pairs = small
    first, _, _ = align_cached(pairs, scene.images, AlignConf(refine=Refinement.NONE), tmp_path)
    lens = Camera(width=640, height=480, fx=500.0, fy=500.0, cx=320.0, cy=240.0, model="OPENCV",
                  distortion=(-0.1, 0.02, 1e-4, -2e-4))  # fmt: skip
    plain = Camera(width=640, height=480, fx=500.0, fy=501.0, cx=320.0, cy=240.0)
    cameras = (lens, plain) + first.cameras[2:] if len(first.cameras) > 2 else (lens, plain)[: len(first.cameras)]
    with_lens = dataclasses.replace(first, cameras=cameras)
    with cache.open_store(tmp_path, "lens-test", {}) as store:
        with store.writer() as writer:
            cache.write_scene(writer, "k", with_lens)
    with cache.open_store(tmp_path, "lens-test", {}) as store:
        assert cache.read_scene(store, "k").cameras == with_lens.cameras


def test_key_changes_with_any_input(small):
    scene, pairs = small
    key = alignment_key(pairs, scene.images, {})
    moved = list(pairs)
    xy = moved[0].xy_i.copy()
    xy[0, 0] += 0.01
    moved[0] = dataclasses.replace(moved[0], xy_i=xy)
    assert alignment_key(moved, scene.images, {}) != key
    focal = [dataclasses.replace(scene.images[0], prior_focal_px=700.0), *scene.images[1:]]
    assert alignment_key(pairs, focal, {}) != key
    assert alignment_key(pairs[:-1], scene.images, {}) != key
    assert alignment_key(pairs, scene.images, {}) == key
