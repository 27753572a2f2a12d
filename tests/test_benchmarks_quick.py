"""The benchmark scripts run in ``--quick`` mode and write results JSON with the expected fields.

No timing is asserted anywhere: the numbers of a quick run mean nothing. Each script runs
in-process through its ``main(argv)``, into a temporary results directory, with the smallest
sizes that still exercise every variant (MobileNetV2 only, its export shared by ``extract``
and ``quant`` through one temporary cache).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("skimage", reason="the extract benchmark writes JPEGs of scikit-image's photos")

from benchmarks import ceiling, extract, quant, report, store, store_scale  # noqa: E402
from benchmarks.targets import TARGETS  # noqa: E402
from featurestore.sources import FASHION_MNIST_DIR  # noqa: E402

SAMPLE_KEYS = {"samples_s", "median_s", "min_s", "max_s", "spread", "work", "unit", "rate"}
TARGET_KEYS = {"id", "goal", "op", "threshold", "unit", "measured", "paired_range", "passed", "note"}


@pytest.fixture(scope="module")
def results(tmp_path_factory, benchmark_cache) -> Path:
    if not Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("the quant benchmark needs Debian's dataset-fashion-mnist")
    base = tmp_path_factory.mktemp("benchmarks")
    common = ["--quick", "--repeats", "1", "--results-dir", str(base / "results"), "--workdir", str(base / "work")]
    cache = ["--cache-dir", str(benchmark_cache)]
    assert ceiling.main([*common, "--n", "256", "--copy-mib", "8", "--disk-mib", "8"]) == 0
    assert store.main([*common, "--rows", "600", "--subset", "100"]) == 0
    assert store_scale.main([*common, "--shards", "1200", "--rows-per-shard", "3"]) == 0
    assert extract.main([*common, *cache, "--backbones", "mobilenet_v2", "--batch-sizes", "1,32",
                         "--images", "4"]) == 0
    assert quant.main([*common, *cache, "--backbones", "mobilenet_v2", "--train", "40", "--test", "30",
                       "--calibration", "8", "--speed", "32"]) == 0
    return base / "results"


def _samples(node) -> list[dict]:
    """Every variant summary (a dict with ``samples_s``) anywhere in a results document."""
    if isinstance(node, dict):
        found = [node] if "samples_s" in node else []
        return found + [s for value in node.values() for s in _samples(value)]
    if isinstance(node, list):
        return [s for value in node for s in _samples(value)]
    return []


def _load(results: Path, name: str) -> dict:
    doc = json.loads((results / f"{name}.json").read_text())
    assert doc["benchmark"] == name and doc["quick"] is True and doc["repeats"] == 1
    assert doc["machine"]["cpu"]["model"] and doc["machine"]["cpu"]["usable_cores"] >= 1
    assert {"numpy", "onnx"} <= set(doc["machine"]["versions"])
    assert isinstance(doc["parameters"], dict) and doc["tables"]
    for tab in doc["tables"]:
        assert tab["rows"] and all(len(row) == len(tab["headers"]) for row in tab["rows"])
    summaries = _samples(doc)
    assert summaries
    for summary in summaries:
        assert SAMPLE_KEYS <= set(summary) and len(summary["samples_s"]) == 1
        assert summary["min_s"] <= summary["median_s"] <= summary["max_s"]
    for target in doc["targets"]:
        assert TARGET_KEYS <= set(target) and isinstance(target["passed"], bool)
    return doc


def _target_ids(doc: dict) -> set[str]:
    return {t["id"] for t in doc["targets"]}


def test_ceiling_reports_peaks(results):
    doc = _load(results, "ceiling")
    assert {"sgemm numpy", "sgemm onnxruntime", "memory copy", "disk write + fsync", "page-cache read"} <= set(
        doc["variants"])
    assert doc["peak"]["sgemm_gflops_onnxruntime"] > 0
    assert "onnxruntime / numpy sgemm" in doc["ratios"]


def test_store_covers_every_case_and_target(results):
    doc = _load(results, "store")
    assert {(c["layout"], c["dtype"]) for c in doc["cases"]} == {
        (layout, dtype) for layout in ("single", "stages") for dtype in ("float32", "float16")}
    assert _target_ids(doc) == {"store.write", "store.read", "store.read_layer", "store.random_rows"}
    single = next(c for c in doc["cases"] if (c["layout"], c["dtype"]) == ("single", "float32"))
    assert {"ours write_arrays", "np.save", "torch.save", "ours random rows", "ours slice"} <= set(single["variants"])
    assert single["breakdown"]["write_arrays"]["total"] > 0
    assert "checksummed/unchecked load (time)" in single["ratios"] and "ours load(check=False) (opened)" in single["variants"]


def test_store_scale_reports_each_milestone(results):
    doc = json.loads((results / "store_scale.json").read_text())  # figures per milestone, no timed variants
    assert doc["benchmark"] == "store_scale" and doc["quick"] is True and doc["tables"][0]["rows"]
    points = doc["points"]
    assert [p["shards"] for p in points] == [1000, 1200]
    assert [p["rows"] for p in points] == [3000, 3600]
    assert all(p["commit_median_s"] > 0 and p["held_bytes"] > 0 and p["index_bytes"] > 0 for p in points)
    assert _target_ids(doc) == {"store.commit_growth"}
    assert doc["projection"]["rows"] == 10**8


def test_extract_has_baselines_ratios_and_targets(results):
    doc = _load(results, "extract")
    groups = {(g["backbone"], g["batch_size"]): g for g in doc["groups"]}
    assert set(groups) == {("mobilenet_v2", 1), ("mobilenet_v2", 32)}
    g = groups[("mobilenet_v2", 32)]
    assert {"A torch eager", "A torch channels_last", "B onnxruntime", "ours", "decode only",
            "B onnxruntime stages", "ours stages"} <= set(g["variants"])
    assert {"ours/A", "ours/B", "stages/last end to end (time)"} <= set(g["ratios"])
    assert g["gflop_per_image"] == pytest.approx(0.60, rel=0.02)
    assert g["torch_onnxruntime_max_rel_diff"] < 1e-3  # baseline A computes the same features
    assert _target_ids(doc) == {"extract.vs_torch", "extract.vs_ort", "extract.stages_overhead",
                                "extract.stages_overhead_ort"}


def test_quant_measures_speed_and_accuracy(results):
    doc = _load(results, "quant")
    (result,) = doc["results"]
    assert set(result["variants"]) == {"torch fp32 eager", "torch fp32 channels_last",
                                       "torch bf16 autocast channels_last", "onnxruntime fp32", "onnxruntime int8",
                                       "extract fp32", "extract int8"}
    assert result["quantization"]["mode"] == "static" and result["quantization"]["cosine"]
    assert result["auto"]["precision"] in ("fp32", "int8") and result["auto"]["reason"]
    transfer = result["transfer"]
    assert set(transfer["accuracy"]) == {"logreg", "svm"} and transfer["train"] == 40 and transfer["test"] == 30
    assert all(0.0 <= a[k] <= 1.0 for a in transfer["accuracy"].values() for k in ("fp32", "int8"))
    assert _target_ids(doc) == {"quant.speedup.mobilenet_v2", "quant.transfer_loss.mobilenet_v2"}


def test_quant_hides_vnni_from_onnxruntime(results):
    """The instruction-set rows: each child saw its mask, and auto keeps fp32 where VNNI is hidden."""
    doc = _load(results, "quant")
    (result,) = doc["results"]
    if "isa" not in result:
        assert any(note.startswith("No instruction-set masks: ") for note in doc["notes"])
        pytest.skip(f"no instruction-set masks on this machine: {doc['notes'][-1]}")
    native, no_vnni, avx2 = result["isa"]
    assert [row["isa"] for row in result["isa"]] == ["native", "no VNNI (AVX-512)", "AVX2 only"]
    assert not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(no_vnni["flags"])
    assert ("avx512f" in no_vnni["flags"]) == ("avx512f" in native["flags"])
    assert not [f for f in avx2["flags"] if f.startswith(("avx512", "amx"))] and "avx2" in avx2["flags"]
    assert set(native["flags"]) >= set(no_vnni["flags"]) >= set(avx2["flags"])
    for row in (no_vnni, avx2):
        assert row["auto"] == "fp32" and "no native int8 dot product" in row["reason"]
    for row in result["isa"]:
        assert row["fp32"] > 0 and row["int8"] > 0 and 0 < min(row["cosine"].values()) <= 1
    assert any(tab["headers"][1] == "ISA" and len(tab["rows"]) == 3 for tab in doc["tables"])


def test_report_lists_every_target(results, tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    notes = tmp_path / "notes.toml"
    notes.write_text('["store.write"]\nnote = "hand-kept note"\n')
    assert report.main(["--results-dir", str(results), "--output", str(output), "--notes", str(notes)]) == 0
    text = output.read_text()
    for target in TARGETS:
        assert f"| {target.id} |" in text
    assert "hand-kept note" in text
    assert "PASS" in text or "MISS" in text
    assert "not measured: benchmarks/heads.py has not written results" in text  # not run in this module
