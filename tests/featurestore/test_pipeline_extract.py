"""`featurestore run`: an [[extract]] step finds new images on every run and does no work when nothing changed."""

from __future__ import annotations

from pathlib import Path

from featurestore import open_store
from featurestore.manifest import MANIFEST_NAME
from featurestore.cli.pipeline import run_pipeline
from images import write_good_images


def _pipeline(tmp_path: Path, model: Path, folder: Path) -> Path:
    toml = tmp_path / "p.toml"
    toml.write_text(f'workdir = "{tmp_path / "work"}"\n\n[[extract]]\nname = "s"\nmodel = "{model}"\n'
                    f'sources = ["{folder}"]\ndevice = "cpu"\nshard_rows = 4\n\n'
                    f'[[bench]]\nname = "report"\nstores = ["s"]\nheads = ["nb"]\nfusions = []\ncv = 2\n')
    return toml


def _write_classes(folder: Path, n: int, seed: int, sub: str = "") -> None:
    for label in ("a", "b"):
        write_good_images(folder / label / sub, n=n // 2, seed=seed + (0 if label == "a" else 1000))


def test_new_images_in_a_folder_are_extracted_and_an_unchanged_source_does_no_work(tiny_onnx, tmp_path):
    folder = tmp_path / "imgs"
    _write_classes(folder, 12, seed=0)
    toml = _pipeline(tmp_path, tiny_onnx, folder)
    store = tmp_path / "work" / "s"

    extract_step, bench_step = run_pipeline(toml)
    assert extract_step.status == "ran" and "12 rows added" in extract_step.detail
    assert bench_step.status == "ran"
    assert len(open_store(store)) == 12

    _write_classes(folder, 10, seed=500, sub="new")  # ten new images beside the old ones
    extract_step, bench_step = run_pipeline(toml)
    assert extract_step.status == "ran" and "10 rows added, 10 decoded" in extract_step.detail
    assert bench_step.status == "ran", "the bench must see the store's new rows"
    assert len(open_store(store)) == 22
    assert sorted(open_store(store).paths.tolist()) == sorted(str(p) for p in folder.rglob("*.*"))

    manifest = (store / MANIFEST_NAME).read_bytes()
    shards = sorted(p.name for p in (store / "shards").iterdir())
    extract_step, bench_step = run_pipeline(toml)
    assert extract_step.status == "skipped" and "22 images listed, none new" in extract_step.detail
    assert bench_step.status == "skipped"
    assert (store / MANIFEST_NAME).read_bytes() == manifest, "an up-to-date store must stay byte-identical"
    assert sorted(p.name for p in (store / "shards").iterdir()) == shards
