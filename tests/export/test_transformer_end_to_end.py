"""export -> extract -> bench on a ViT store and a Swin store, through the command line."""

from __future__ import annotations

import csv

import pytest

from featurestore import open_store
from featurestore.cli import main
from images import write_good_images


@pytest.mark.parametrize("backbone, layers, outputs", [
    ("timm:deit_tiny_patch16_224", "stages:cls+mean", ["blocks.2.cls+mean", "blocks.5.cls+mean",
                                                       "blocks.8.cls+mean", "blocks.11.cls+mean"]),
    pytest.param("swin_t", "stages,last", ["features.1.avg", "features.3.avg", "features.5.avg", "norm.avg",
                                           "pre_logits"], marks=pytest.mark.slow),
])
def test_export_extract_bench(backbone, layers, outputs, tmp_path, capsys):
    for label, seed in (("a", 0), ("b", 500)):
        write_good_images(tmp_path / "imgs" / label, n=8, size=(80, 60), seed=seed)
    model, store, report = tmp_path / "m.onnx", tmp_path / "store", tmp_path / "report"
    assert main(["export", backbone, "--random-init", "--layers", layers, "-o", str(model)]) == 0
    assert main(["extract", str(model), str(tmp_path / "imgs"), "-o", str(store), "--device", "cpu",
                 "--no-progress"]) == 0
    opened = open_store(store)
    assert opened.layers == outputs and len(opened) == 16
    assert main(["bench", str(store), "-o", str(report), "--heads", "logreg,nb", "--fusions", "concat",
                 "--cv", "2", "--jobs", "1"]) == 0
    rows = list(csv.DictReader(open(report / "results.csv")))
    assert {r["layer"] for r in rows} == set(outputs) | {f"concat({len(outputs)} layers)"}
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
