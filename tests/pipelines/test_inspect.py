"""`sfm3r info` and `sfm3r evaluate`: per-camera/per-image statistics, labelled metrics, JSON."""

import json

import numpy as np
from click.testing import CliRunner

from report_scenes import arc_scene
from sfm3r.cli.main import cli
from sfm3r.io.colmap import write_colmap_model
from sfm3r.pipelines.evaluate import METRICS, metric_rows
from sfm3r.pipelines.inspect import model_stats, observation_errors


def test_observation_errors_are_zero_for_exact_and_match_added_noise():
    assert np.abs(observation_errors(arc_scene())).max() < 1e-9
    noisy = observation_errors(arc_scene(noise_px=1.0))
    assert 0.8 < noisy.mean() < 1.8  # mean norm of a 2D unit Gaussian: 1.25


def test_model_stats_counts_per_image_and_track_lengths(tmp_path):
    scene = arc_scene()
    write_colmap_model(scene, tmp_path / "run" / "sparse" / "0")
    (tmp_path / "run" / "run.json").write_text(json.dumps({"images": [{"name": n} for n in (*scene.image_names, "x.jpg")]}))
    stats = model_stats(tmp_path / "run")
    assert [row.name for row in stats.images] == [*scene.image_names, "x.jpg"]
    assert [row.registered for row in stats.images] == [True] * 4 + [False]
    assert stats.images[0].observations == 80 and stats.images[1].observations == 60
    assert stats.track_lengths == {3: 60, 4: 20}  # points p % 4 == 0 are seen by all four
    assert stats.cameras[0].model == "SIMPLE_PINHOLE" and stats.cameras[0].params == (500.0, 320.0, 240.0)


def test_info_prints_cameras_images_and_histogram(tmp_path):
    write_colmap_model(arc_scene(), tmp_path / "model")
    result = CliRunner().invoke(cli, ["info", str(tmp_path / "model")], terminal_width=160)
    assert result.exit_code == 0, result.output
    for text in ("SIMPLE_PINHOLE", "640x480", "500.00, 320.00, 240.00", "0003.jpg", "Track lengths", "4 of 4"):
        assert text in result.output


def test_evaluate_prints_labelled_table_and_writes_json(tmp_path):
    model = tmp_path / "model"
    write_colmap_model(arc_scene(), model)
    result = CliRunner().invoke(cli, ["evaluate", str(model), str(model), "--json", str(tmp_path / "m.json")],
                                terminal_width=200)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "RRA@5°" in result.output and "% radius" in result.output and "meaning" in result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["registration_rate"] == 100.0 and metrics["RRA@5"] == 100.0
    assert {row["key"] for row in metrics["table"]} >= {"ATE", "AUC@3", "unregistered"}


def test_every_metric_has_a_label_unit_and_meaning():
    from report_scenes import arc_scene as scene_for

    from sfm3r.sfm.evaluation import evaluate_poses

    metrics = evaluate_poses(scene_for(), scene_for())
    assert set(metrics) <= set(METRICS)
    labels = [row.label for row in metric_rows(metrics)]
    assert len(labels) == len(set(labels))  # no two rows look alike
