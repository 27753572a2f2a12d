"""The map benchmark runs the real `featurestore map` command and records its figures.

No time is asserted: the target's verdict is whatever the machine measured.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import map as map_benchmark


def test_quick_run_maps_a_synthetic_store_through_the_command(tmp_path):
    argv = ["--quick", "--results-dir", str(tmp_path / "results"), "--workdir", str(tmp_path / "work"),
            "--max-points", "300"]
    assert map_benchmark.main(argv) == 0
    assert not list((tmp_path / "work").iterdir())  # the store and the page are removed
    doc = json.loads((tmp_path / "results" / "map.json").read_text())
    found = doc["map"]
    assert (found["rows_drawn"], found["total_rows"], found["method"]) == (300, 600, "tsne")
    assert found["command"][:2] == ["featurestore", "map"] and "--max-points" in found["command"]
    assert len(found["samples_s"]) == 1 and found["wall_s"] > 0 and found["cpu_s"][0] > 0
    assert set(found["steps_s"]) == {"read", "pca", "tsne", "thumbnails"}
    assert 0.9 <= found["knn_accuracy_2d"] <= 1.0  # three far-apart blobs stay apart in 2-D
    assert 0.9 <= found["knn_accuracy_pca"] <= 1.0
    (target,) = doc["targets"]
    assert target["id"] == "map.budget" and target["measured"] == found["wall_s"]
    assert target["passed"] == (found["wall_s"] <= 180) and "300 of 600 rows drawn" in target["note"]
    (tab,) = doc["tables"]
    assert tab["rows"][0][:3] == ["synthetic", "300 of 600", "tsne"]


def test_summary_line_of_an_unsampled_unlabelled_map():
    found = map_benchmark.parse_summary("wrote m.html: 1,234 rows of pixels by pca (read 0.1 s, pca 2.5 s, "
                                        "thumbnails 0.0 s)")
    assert found == {"rows_drawn": 1234, "total_rows": 1234, "layer": "pixels", "method": "pca",
                     "knn_accuracy_2d": None, "knn_accuracy_pca": None,
                     "steps_s": {"read": 0.1, "pca": 2.5, "thumbnails": 0.0}}
    with pytest.raises(ValueError, match="not the summary line"):
        map_benchmark.parse_summary("Traceback (most recent call last):")
