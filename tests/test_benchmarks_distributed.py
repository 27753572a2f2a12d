"""``benchmarks.distributed --quick`` runs both engines and writes a complete results JSON.

No timing is asserted: the numbers of a quick run mean nothing. The run starts its own local
Ray instance (and stops it), exports MobileNetV2 into a temporary cache and writes JPEGs there.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray.data", reason="the distributed benchmark needs Ray Data")
pytest.importorskip("skimage", reason="the benchmark writes JPEGs of scikit-image's photos")

from benchmarks import distributed  # noqa: E402

# Ray Data sets its own deprecated config attributes internally; those warnings are not ours.
pytestmark = [pytest.mark.distributed, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")]


def test_quick_run_writes_tables_correctness_and_driver_limits(tmp_path, benchmark_cache):
    results = tmp_path / "results"
    assert distributed.main(["--quick", "--repeats", "1", "--results-dir", str(results), "--workdir",
                             str(tmp_path / "work"), "--cache-dir", str(benchmark_cache)]) == 0
    doc = json.loads((results / "distributed.json").read_text())

    assert doc["benchmark"] == "distributed" and doc["quick"] is True and doc["repeats"] == 1
    assert doc["targets"] == []
    assert doc["tables"] and doc["notes"]
    for tab in doc["tables"]:
        assert tab["rows"] and all(len(row) == len(tab["headers"]) for row in tab["rows"])

    assert set(doc["variants"]) == {"local", "ray w1"}
    for stats in doc["variants"].values():
        assert len(stats["samples_s"]) == 1 and stats["rate"] > 0
    assert doc["correctness"]["ray w1"]["equal"] is True
    assert doc["correctness"]["ray w1"]["rows"] == doc["parameters"]["images"]
    engines = doc["tables"][0]
    assert [row[-1] for row in engines["rows"]] == ["reference", "equal"]
    assert sum(a["images"] for a in doc["workers"]["ray w1"]["actors"]) == doc["parameters"]["images"]

    startup = doc["startup"]
    assert startup["ray_init_s"] > 0 and startup["cold_s"] > startup["first_run_s"]
    assert [c["manifest_shards"] for c in doc["commit_rate"]] == doc["parameters"]["commit_manifest_shards"]
    assert all(c["shards_per_s"] > 0 and c["commit"]["work"] == c["shard_rows"] for c in doc["commit_rate"])
    assert doc["listing"]["rate"] > 0
    assert any("past one machine" in note for note in doc["notes"])
    assert not list((tmp_path / "work").iterdir())  # scratch stores removed
