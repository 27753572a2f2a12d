"""Extraction behaviour: bad input, resume/incremental, fingerprint mismatch, views, dtype."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from featurestore import (
    ArraySource, ExtractConfig, StoreError, extract, open_store, verify_store,
)
from featurestore.cli import main
from images import write_bad_images, write_good_images, write_tricky_images

OPTS = ExtractConfig(batch_size=4, shard_rows=3, device="cpu", progress=False)


def _features_by_key(store_path: Path) -> dict[tuple[str, int], np.ndarray]:
    store = open_store(store_path)
    data = store.load(view=None)
    matrix = data.matrix()
    return {(k, int(v)): matrix[i] for i, (k, v) in enumerate(zip(data.keys.tolist(), data.views.tolist()))}


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bad_input_is_recorded_once_and_never_shifts_rows(tiny_onnx, tmp_path):
    mixed = tmp_path / "mixed"
    good = write_good_images(mixed, n=6)
    tricky = write_tricky_images(mixed)
    bad = write_bad_images(mixed)
    only_good = tmp_path / "only_good"
    only_good.mkdir()
    for path in good + list(tricky.values()):
        shutil.copy(path, only_good / path.name)

    report = extract(tiny_onnx, mixed, tmp_path / "mixed_store", OPTS)
    assert sorted(Path(f["path"]).name for f in report.failures) == sorted(p.name for p in bad.values())
    causes = {Path(f["path"]).name: f["error"] for f in report.failures}
    assert causes[bad["bomb"].name] == "DecompressionBombError"
    assert causes[bad["zero_byte"].name] == "UnidentifiedImageError"
    assert report.decoded == len(good) + len(tricky)

    # A rerun decodes nothing and records no failure twice.
    again = extract(tiny_onnx, mixed, tmp_path / "mixed_store", OPTS)
    assert again.decoded == 0 and again.skipped == len(good) + len(tricky) + len(bad)
    store = open_store(tmp_path / "mixed_store")
    assert sorted(Path(f["path"]).name for f in store.failures) == sorted(p.name for p in bad.values())
    assert verify_store(tmp_path / "mixed_store") == []

    extract(tiny_onnx, only_good, tmp_path / "good_store", OPTS)
    with_bad, clean = _features_by_key(tmp_path / "mixed_store"), _features_by_key(tmp_path / "good_store")
    assert with_bad.keys() == clean.keys()
    for key in clean:
        np.testing.assert_array_equal(with_bad[key], clean[key])

    by_name = {Path(p).name: k for k, p in zip(store.keys.tolist(), store.paths.tolist())}
    rotated = with_bad[(by_name[tricky["exif_rotated_jpeg"].name], 0)]
    reference = with_bad[(by_name[tricky["exif_rotated_reference"].name], 0)]
    np.testing.assert_array_equal(rotated, reference)


def test_strict_stops_at_first_bad_file(tiny_onnx, tmp_path):
    write_good_images(tmp_path / "imgs", n=2)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"<html>not an image</html>")
    code = main(["extract", str(tiny_onnx), str(tmp_path / "imgs"), "-o", str(tmp_path / "s"),
                 "--strict", "--device", "cpu", "--no-progress"])
    assert code == 1
    assert verify_store(tmp_path / "s") == []


def test_second_run_decodes_nothing_and_new_images_add_rows(tiny_onnx, tmp_path, capsys):
    folder = tmp_path / "imgs"
    write_good_images(folder, n=8, seed=1)
    args = ["extract", str(tiny_onnx), str(folder), "-o", str(tmp_path / "s"), "--device", "cpu",
            "--no-progress", "--shard-rows", "3"]
    assert main(args) == 0
    assert len(open_store(tmp_path / "s")) == 8
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "0 decoded and inferred" in out and "nothing new to extract" in out
    before = _features_by_key(tmp_path / "s")

    write_good_images(tmp_path / "more", n=5, seed=99)
    for path in (tmp_path / "more").iterdir():
        shutil.copy(path, folder / f"new_{path.name}")
    assert main(args) == 0
    assert "5 decoded and inferred, 5 rows added" in capsys.readouterr().out
    after = _features_by_key(tmp_path / "s")
    assert len(after) == 13
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value)
    assert verify_store(tmp_path / "s") == []


@pytest.mark.parametrize("change", ["model", "layers", "dtype", "views"])
def test_mismatched_config_fails_and_leaves_store_untouched(change, tiny_onnx, tiny_onnx_other, tmp_path, capsys):
    from export import export_backbone
    from tiny_models import tiny_net

    folder = tmp_path / "imgs"
    write_good_images(folder, n=4)
    store = tmp_path / "s"
    extract(tiny_onnx, folder, store, OPTS)
    before = _snapshot(store)
    model, extra = tiny_onnx, []
    if change == "model":
        model = tiny_onnx_other
    elif change == "layers":
        model = tmp_path / "last_only.onnx"
        export_backbone(tiny_net(), model, layers="last", image_size=32)
    elif change == "dtype":
        extra = ["--dtype", "float16"]
    else:
        extra = ["--views", "2", "--augment", "hflip"]
    code = main(["extract", str(model), str(folder), "-o", str(store), "--device", "cpu", "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 1
    assert "different configuration" in err and "new store path" in err
    assert {"model": "model:", "layers": "layers:", "dtype": "dtype:", "views": "views:"}[change] in err
    assert _snapshot(store) == before


def test_views_store_augmented_rows_deterministically(tiny_onnx, tmp_path):
    folder = tmp_path / "imgs"
    write_good_images(folder, n=3)
    opts = ExtractConfig(batch_size=4, shard_rows=4, device="cpu", progress=False, views=2,
                          augment=("hflip", "crop", "color"))
    extract(tiny_onnx, folder, tmp_path / "a", opts)
    extract(tiny_onnx, folder, tmp_path / "b", opts)
    a, b = _features_by_key(tmp_path / "a"), _features_by_key(tmp_path / "b")
    assert len(a) == 9 and sorted(v for _, v in a) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    store = open_store(tmp_path / "a")
    assert len(store.load(view=0)) == 3 and len(store.load(view=None)) == 9
    keys = {k for k, _ in a}
    assert any(not np.array_equal(a[(k, 0)], a[(k, 1)]) for k in keys)


def test_float16_store_and_overflow_refusal(tmp_path):
    from export import export_backbone
    from featurestore import Preprocessing

    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    prep = Preprocessing(crop_size=(8, 8), resize_mode="exact", mean=(0.0,), std=(1.0,), color_mode="L")
    export_backbone("pixels", tmp_path / "p.onnx", preprocessing=prep)
    f16 = ExtractConfig(dtype="float16", device="cpu", progress=False)
    extract(tmp_path / "p.onnx", ArraySource(images), tmp_path / "s16", f16)
    store = open_store(tmp_path / "s16")
    assert store.load().X["pixels"].dtype == np.float16

    tiny = Preprocessing(crop_size=(8, 8), resize_mode="exact", mean=(0.0,), std=(1e-6,), color_mode="L")
    export_backbone("pixels", tmp_path / "huge.onnx", preprocessing=tiny)
    with pytest.raises(StoreError, match="float16"):
        extract(tmp_path / "huge.onnx", ArraySource(images), tmp_path / "overflow", f16)
    assert len(open_store(tmp_path / "overflow")) == 0


def test_array_source_duplicates_are_stored_once(tmp_path):
    from export import export_backbone
    from featurestore import Preprocessing

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)
    images[3] = images[1]
    prep = Preprocessing(crop_size=(8, 8), resize_mode="exact", mean=(0.0,), std=(1.0,), color_mode="L")
    export_backbone("pixels", tmp_path / "p.onnx", preprocessing=prep)
    labels = ["a", "b", "a", "c", "a"]
    report = extract(tmp_path / "p.onnx", ArraySource(images, labels=labels), tmp_path / "s",
                     ExtractConfig(device="cpu", progress=False))
    assert report.duplicates == 1 and report.rows_added == 4
    store = open_store(tmp_path / "s")
    assert len(store) == 4
    (key,) = store.label_conflicts()
    assert store.label_conflicts()[key] == ["b", "c"]
    assert len(store.duplicates()[key]) == 2


def test_io_binding_path_is_bit_equal_to_the_plain_path(tiny_onnx, tmp_path):
    """The IO-binding code path (used on CUDA) runs on the CPU provider too, with the same features."""
    from featurestore import FeatureModel

    images = np.random.default_rng(5).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    plain = FeatureModel(tiny_onnx, device="cpu", io_binding=False)
    bound = FeatureModel(tiny_onnx, device="cpu", io_binding=True)
    assert bound.io_binding and not plain.io_binding
    a, b = plain.run(images), bound.run(images)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])

    folder = tmp_path / "imgs"
    write_good_images(folder, n=9, seed=4)
    for io_binding, inflight, store in ((False, 1, "plain"), (True, 3, "bound")):
        opts = ExtractConfig(batch_size=2, shard_rows=4, device="cpu", progress=False, io_binding=io_binding,
                              inflight=inflight)
        extract(tiny_onnx, folder, tmp_path / store, opts)
    plain_rows, bound_rows = _features_by_key(tmp_path / "plain"), _features_by_key(tmp_path / "bound")
    assert plain_rows.keys() == bound_rows.keys()
    for key in plain_rows:
        np.testing.assert_array_equal(plain_rows[key], bound_rows[key])
    assert open_store(tmp_path / "plain").keys.tolist() == open_store(tmp_path / "bound").keys.tolist()


def test_unreadable_files_are_recorded_once_as_failures(tiny_onnx, tmp_path):
    folder = tmp_path / "imgs"
    good = write_good_images(folder, n=4)
    (folder / "dangling.jpg").symlink_to(tmp_path / "deleted.jpg")
    (folder / "loop_a.png").symlink_to(folder / "loop_b.png")
    (folder / "loop_b.png").symlink_to(folder / "loop_a.png")
    expected = {"dangling.jpg": "FileNotFoundError", "loop_a.png": "OSError", "loop_b.png": "OSError"}
    if os.geteuid() != 0:  # root reads a file whatever its mode
        locked = write_good_images(tmp_path / "locked", n=1, seed=50)[0].rename(folder / "locked.jpg")
        locked.chmod(0)
        expected["locked.jpg"] = "PermissionError"

    report = extract(tiny_onnx, folder, tmp_path / "store", OPTS)
    assert {Path(f["path"]).name: f["error"] for f in report.failures} == expected
    assert report.listed == len(good) + len(expected) and report.rows_added == len(good)
    again = extract(tiny_onnx, folder, tmp_path / "store", OPTS)
    assert again.decoded == 0 and again.rows_added == 0
    store = open_store(tmp_path / "store")
    assert sorted(Path(f["path"]).name for f in store.failures) == sorted(expected), "each failure once"
    assert sorted(Path(p).name for p in store.paths.tolist()) == sorted(p.name for p in good)
    assert verify_store(tmp_path / "store") == []
