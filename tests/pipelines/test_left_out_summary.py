"""The end-of-run line saying why images were not registered (run.json's counts.scene.left_out)."""

from __future__ import annotations

from sfm3r.pipelines.summary import left_out_line


def _component(links, link_pairs=39):
    return {"images": ["a.png", "b.png"], "internal_pairs": 1, "link_pairs": link_pairs, "links": links}


def test_the_strongest_link_and_its_putative_matches_are_named():
    link = {"name_i": "c.png", "name_j": "b.png", "two_view_verified": False, "num_inliers": 0, "putative_matches": 28}
    assert left_out_line(_component([link])) == (
        "a.png, b.png: 1 verified pair(s) among them, none of the 39 to the model kept "
        "(best: c.png / b.png, 0 inliers of 28 putative matches)"
    )


def test_a_component_the_scene_graph_never_linked():
    assert left_out_line(_component([], link_pairs=0)) == "a.png, b.png: no pair to the model in the scene graph"


def test_a_link_the_edge_check_rejected_says_so():
    link = {"name_i": "c.png", "name_j": "b.png", "two_view_verified": True, "num_inliers": 40, "putative_matches": 90}
    line = left_out_line(_component([link]))
    assert line.endswith("40 inliers of 90 putative matches, rejected by the alignment's edge check)")
