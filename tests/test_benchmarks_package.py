"""The package benchmark runs in ``--quick`` mode and writes its variants, ratio and sizes (no timing asserted)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("skimage", reason="the benchmark writes JPEGs of scikit-image's photos")

from benchmarks import package  # noqa: E402


def test_quick_run_writes_variants_ratio_and_sizes(tmp_path, benchmark_cache):
    assert package.main(["--quick", "--repeats", "1", "--results-dir", str(tmp_path), "--workdir", str(tmp_path / "w"),
                         "--cache-dir", str(benchmark_cache)]) == 0
    doc = json.loads((tmp_path / "package.json").read_text())
    assert set(doc["variants"]) == {"predict", "packaged", "packaged, onnxruntime only"}
    assert doc["ratios"]["packaged/predict"]["value"] > 0
    assert doc["sizes"]["packaged_mb"] > doc["sizes"]["backbone_mb"] * 0.9 and doc["sizes"]["head_kb"] > 0
    assert all(len(row) == len(tab["headers"]) for tab in doc["tables"] for row in tab["rows"])
