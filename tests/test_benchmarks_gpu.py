"""``benchmarks.gpu`` runs end to end on the CPU, records failures and skips, and claims no GPU target there.

No timing is asserted: the numbers of a CPU run mean nothing. The backbone is a tiny seeded
network registered for this module only (32x32 inputs), so exporting it in fp32 and fp16 takes
seconds; the run goes through the same steps a CUDA run does (export, agreement, plain and
IO-binding onnxruntime, torch eager, host decode, tables, targets).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

from benchmarks import _gpu_report as gpu_report  # noqa: E402
from benchmarks import gpu, report  # noqa: E402
from benchmarks.targets import TARGETS  # noqa: E402
from export import BackboneEntry  # noqa: E402
from featurestore import Preprocessing  # noqa: E402

TINY = "tiny_gpu_bench"
VARIANTS = {gpu.ORT_RUN, gpu.ORT_BOUND, gpu.TORCH}
GPU_TARGETS = {t.id for t in TARGETS if t.benchmark == "gpu"}


class _TinyNet(nn.Module):
    """Two convolutions, a BatchNorm, global pooling and a classifier (the export's `last` is its input)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1),
                                      nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@pytest.fixture(scope="module")
def tiny_backbone():
    """``TINY`` in the export registry for this module only (the registry has no public unregister)."""
    from export import backbones

    entry = BackboneEntry(TINY, _TinyNet, Preprocessing(crop_size=(32, 32), resize_size=36))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(backbones._REGISTRY, TINY, entry)
        yield TINY


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gpu-bench")


def _argv(base: Path, results: str, *extra: str) -> list[str]:
    return ["--quick", "--device", "cpu", "--backbones", TINY, "--batch-sizes", "2,3", "--repeats", "1",
            "--agreement-images", "5", "--decode-images", "3", "--extract-images", "4",
            "--results-dir", str(base / results),
            "--workdir", str(base / "work"), "--cache-dir", str(base / "cache"), *extra]


def _load(results: Path) -> dict:
    doc = json.loads((results / "gpu.json").read_text())
    assert doc["benchmark"] == "gpu"
    for tab in doc["tables"]:
        assert tab["rows"] and all(len(row) == len(tab["headers"]) for row in tab["rows"])
    return doc


@pytest.fixture(scope="module")
def measured(tiny_backbone, base) -> dict:
    assert gpu.main(_argv(base, "results")) == 0
    return _load(base / "results")


def test_cpu_run_measures_every_variant(measured):
    doc = measured
    assert doc["status"] == "measured" and doc["device"] == "cpu" and doc["quick"] is True and doc["repeats"] == 1
    assert doc["parameters"]["weights"] == {TINY: "random init (seeded)"}
    groups = {(g["backbone"], g["precision"], g["batch_size"]): g for g in doc["groups"]}
    assert set(groups) == {(TINY, p, bs) for p in ("fp16", "fp32") for bs in (2, 3)}
    for (_, precision, bs), group in groups.items():
        assert group["status"] == "measured"
        expected = VARIANTS - {gpu.TORCH} if precision == "fp16" else VARIANTS  # torch fp16 is CUDA-only
        assert set(group["variants"]) == expected
        for stats in group["variants"].values():
            assert len(stats["samples_s"]) == 1 and stats["work"] == bs and stats["unit"] == "img"
        assert f"{gpu.ORT_BOUND} / {gpu.ORT_RUN}" in group["ratios"]
    assert groups[(TINY, "fp16", 2)]["errors"] == {gpu.TORCH: gpu.SKIPPED_TORCH_CPU_FP16}
    assert f"{gpu.ORT_BOUND} / {gpu.TORCH}" in groups[(TINY, "fp32", 2)]["ratios"]
    decode = doc["host_decode"]
    if decode is not None:  # needs scikit-image's photos
        assert decode["images"] == 3 and decode["per_thread"] > 0


def test_cpu_run_decodes_on_the_device_and_extracts_both_ways(measured):
    pytest.importorskip("skimage", reason="the decode step needs scikit-image's photos")
    pytest.importorskip("torchcodec.decoders", reason="the device decoder needs TorchCodec")
    device = measured["device_decode"]
    assert device["device"] == "cpu" and device["images"] == 3 and device["rate"] > 0
    assert device["pixel_difference"]["host full-size decode"]["max_abs"] <= 1  # libjpeg-turbo on both sides
    e2e = measured["extract_decode"]
    assert e2e["images"] == 4 and set(e2e["variants"]) == {"extract decode=host", "extract decode=device"}
    assert e2e["ratio"]["value"] > 0 and e2e["feature_cosine"]["min"] > 0.99
    titles = [t["title"] for t in measured["tables"]]
    assert any(t.startswith("Decoding 3 500x375 JPEGs") for t in titles)
    assert any(t.startswith("extract end to end") for t in titles)


def test_cpu_agreement_of_the_io_binding_path(measured):
    (agreement,) = measured["agreement"]
    assert agreement["backbone"] == TINY and agreement["images"] == 5
    assert agreement["fp32"]["min_cosine"] >= 1 - 1e-6  # the same CPU provider, bound or not
    assert agreement["fp16"]["min_cosine"] >= 0.99
    assert agreement["torch fp32"]["min_cosine"] >= 0.9999  # the torch baseline computes the same features


def test_cpu_run_claims_no_gpu_target(measured):
    assert measured["targets"] == []
    assert any("CUDA not available" in note for note in measured["notes"])


def test_a_failing_variant_is_recorded_and_the_rest_measured(tiny_backbone, base, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(gpu, "_torch_runner", broken)
    assert gpu.main(_argv(base, "broken", "--precisions", "fp32", "--no-device-decode")) == 0
    doc = _load(base / "broken")
    assert doc["status"] == "measured" and doc["groups"] and doc["device_decode"] is None
    for group in doc["groups"]:
        assert set(group["variants"]) == VARIANTS - {gpu.TORCH}
        assert "out of memory" in group["errors"][gpu.TORCH]


def test_time_budget_skips_what_has_not_started(tiny_backbone, base):
    assert gpu.main(_argv(base, "budget", "--time-budget", "0")) == 0
    doc = _load(base / "budget")
    assert doc["groups"] and all(g["status"] == "skipped" for g in doc["groups"])
    assert doc["targets"] == []


def test_without_cuda_a_full_run_is_recorded_as_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "cuda_status", lambda: (False, "no GPU in this test"))
    assert gpu.main(["--results-dir", str(tmp_path / "auto")]) == 0
    doc = _load(tmp_path / "auto")
    assert doc["status"] == "skipped" and doc["groups"] == [] and doc["targets"] == []
    assert "no GPU in this test" in doc["notes"][0]
    assert gpu.main(["--device", "cuda", "--results-dir", str(tmp_path / "cuda")]) == 1  # asked for, not there
    assert _load(tmp_path / "cuda")["status"] == "skipped"


def test_report_renders_gpu_results(measured, base, tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    assert report.main(["--results-dir", str(base / "results"), "--output", str(output),
                        "--notes", str(tmp_path / "none.toml")]) == 0
    text = output.read_text()
    assert "## gpu" in text and "Agreement with CPU fp32 features" in text
    for target_id in GPU_TARGETS:
        assert f"| {target_id} |" in text


def _cuda_document(batch: int = 256) -> dict:
    """A results document as a CUDA run writes it: resnet50 and mobilenet_v2 groups and agreement."""
    from benchmarks._common import summarize

    groups = []
    for backbone in ("resnet50", "mobilenet_v2"):
        seconds = {gpu.ORT_RUN: [0.30, 0.32], gpu.ORT_BOUND: [0.25, 0.26], gpu.TORCH: [0.20, 0.21]}
        stats = {name: summarize(s, 4 * batch, "img") for name, s in seconds.items()}
        groups.append({"backbone": backbone, "precision": "fp16", "batch_size": batch, "status": "measured",
                       "variants": stats, "ratios": gpu_report.ratios(stats), "errors": {}})
    groups.append({"backbone": "resnet50", "precision": "fp32", "batch_size": 512, "status": "failed",
                   "errors": {gpu.TORCH: "OutOfMemoryError: CUDA out of memory"}})
    agreement = [{"backbone": "resnet50", "images": 64, "fp32": {"min_cosine": 0.99995, "mean_cosine": 0.99999},
                  "fp16": {"min_cosine": 0.9995, "mean_cosine": 0.9998}, "errors": {}},
                 {"backbone": "mobilenet_v2", "images": 64, "fp32": {"min_cosine": 0.99999, "mean_cosine": 1.0},
                  "errors": {"fp16": "RuntimeError: boom"}}]
    return {"device": "cuda", "parameters": {"agreement_images": 64, "gpu": {"gpu": "NVIDIA H200"}},
            "groups": groups, "agreement": agreement, "host_decode": None,
            "device_decode": {"error": "RuntimeError: nvJPEG failed"}, "extract_decode": None}


def test_cuda_targets_from_what_was_measured():
    doc = _cuda_document()
    targets = {t["id"]: t for t in gpu_report.targets(doc)}
    assert set(targets) == GPU_TARGETS
    assert targets["gpu.agreement.fp32"]["measured"] == pytest.approx(0.99995)  # the lowest over backbones
    assert targets["gpu.agreement.fp16"]["measured"] == pytest.approx(0.9995)
    assert "Not measured: mobilenet_v2" in targets["gpu.agreement.fp16"]["note"]
    ratio = targets["gpu.ort_vs_torch.resnet50"]
    assert ratio["measured"] == pytest.approx(0.205 / 0.255) and ratio["passed"] is True
    assert ratio["paired_range"] == [pytest.approx(0.20 / 0.25), pytest.approx(0.21 / 0.26)]
    tables = gpu_report.tables(doc, repeats=2)
    assert [len(row) for tab in tables for row in tab["rows"]] == [len(tab["headers"]) for tab in tables
                                                                   for _ in tab["rows"]]
    assert ["resnet50", "fp32", "512", "failed", "failed", "error"] == tables[0]["rows"][-1][:6]


def test_no_speed_target_without_the_target_batch():
    targets = gpu_report.targets(_cuda_document(batch=64))
    assert {t["id"] for t in targets} == {"gpu.agreement.fp32", "gpu.agreement.fp16"}
