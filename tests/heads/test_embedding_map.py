"""featurestore map: a store's rows in 2-D as one self-contained page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from featurestore import write_arrays
from featurestore.cli import main

from test_report_html import HOSTILE, Page, hostile_store


def clustered_store(path: Path, n: int = 150, classes: int = 3, seed: int = 0) -> Path:
    """``n`` rows of ``classes`` well-separated clusters in 20 dimensions, with pseudo paths (no image on disk)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = rng.normal(size=(classes, 20))[y] * 6 + rng.normal(size=(n, 20))
    write_arrays(path, {"f": X.astype(np.float32)}, labels=[f"k{v}" for v in y],
                 paths=[f"array:{i:05d}" for i in range(n)])
    return path


def map_data(page_text: str) -> dict:
    block = re.search(r'<script type="application/json" id="map-data">(.*?)</script>', page_text, re.S).group(1)
    return json.loads(block)


def test_stratified_sample_keeps_every_label_in_proportion_and_is_seeded():
    from heads.embedding_map import stratified_sample

    labels = np.array(["a"] * 700 + ["b"] * 200 + ["c"] * 97 + ["d"] * 3)
    picked = stratified_sample(labels, 100, seed=1)
    assert len(picked) == 100 and len(set(picked.tolist())) == 100 and np.all(np.diff(picked) > 0)
    counts = {k: int((labels[picked] == k).sum()) for k in "abcd"}
    assert counts == {"a": 70, "b": 20, "c": 10, "d": 0} or counts == {"a": 70, "b": 20, "c": 9, "d": 1}
    assert np.array_equal(picked, stratified_sample(labels, 100, seed=1))
    assert not np.array_equal(picked, stratified_sample(labels, 100, seed=2))
    assert np.array_equal(stratified_sample(labels, 5000), np.arange(1000))


def test_map_separates_clusters_and_says_what_it_did(tmp_path, capsys):
    store = clustered_store(tmp_path / "s")
    assert main(["map", str(store), "--layer", "f", "-o", str(tmp_path / "m.html"), "--max-points", "90",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "90 of 150 rows (stratified sample, seed 0)" in printed and "10-NN accuracy" in printed
    text = (tmp_path / "m.html").read_text()
    data = map_data(text)
    assert len(data["x"]) == len(data["y"]) == len(data["c"]) == 90
    assert sorted(data["classes"]) == ["k0", "k1", "k2"] and np.bincount(data["c"]).tolist() == [30, 30, 30]
    assert "a stratified sample (by label, seed 0)" in Page(text).all_text("about")
    # the clusters stay apart in 2-D: each point's nearest neighbour is of its own class
    xy = np.stack([data["x"], data["y"]], 1)
    distance = ((xy[:, None] - xy[None]) ** 2).sum(-1) + np.eye(len(xy)) * 9
    assert (np.asarray(data["c"])[distance.argmin(1)] == np.asarray(data["c"])).mean() > 0.95
    # no image on disk (array pseudo paths): no thumbnail, every skipped one counted
    assert data["thumbs"] == {} and "90 no longer on disk" in text


def test_map_carries_thumbnails_and_escapes_labels_and_paths(tmp_path, capsys):
    store, paths = hostile_store(tmp_path, n=60)
    assert main(["map", str(store), "--layer", "signal", "-o", str(tmp_path / "m.html"), "--method", "pca",
                 "--thumbnails", "20", "--no-progress"]) == 0
    text = (tmp_path / "m.html").read_text()
    assert "<script>alert" not in text and "<img src=x" not in text
    page = Page(text)
    assert [a for tag, a in page.tags if tag == "script"] == [{"type": "application/json", "id": "map-data"}, {}]
    assert all(name in page.all_text("legend") for name in HOSTILE)
    data = map_data(text)
    assert sorted(data["classes"]) == sorted(HOSTILE) and data["paths"] == paths
    gone = sum(not Path(paths[int(i)]).exists() for i in data["thumbs"])
    assert gone == 0 and 0 < len(data["thumbs"]) <= 20
    assert all(uri.startswith("data:image/png;base64,") for uri in data["thumbs"].values())


def test_map_refuses_what_it_cannot_do_in_one_line(tmp_path, capsys):
    store = clustered_store(tmp_path / "s", n=30)
    assert main(["map", str(store), "--layer", "nope", "-o", str(tmp_path / "m.html")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("featurestore map: error:") and "nope" in err and "\n" not in err
    assert main(["map", str(store), "--layer", "f", "--max-points", "2", "-o", str(tmp_path / "m.html")]) == 1
    assert "max_points must be an integer >= 3" in capsys.readouterr().err
    bad = np.arange(80, dtype=np.float32).reshape(20, 4)
    bad[3, 1] = np.nan
    write_arrays(tmp_path / "nan", {"f": bad}, labels=["a", "b"] * 10)
    assert main(["map", str(tmp_path / "nan"), "--layer", "f", "-o", str(tmp_path / "m.html")]) == 1
    assert "1 of the 20 rows drawn hold NaN or infinite values" in capsys.readouterr().err
    assert not (tmp_path / "m.html").exists()


def test_map_command_spells_out_the_library_defaults():
    from featurestore.cli import map_cmd
    from heads import embedding_map

    for name in ("METHODS", "DEFAULT_METHOD", "DEFAULT_MAX_POINTS", "DEFAULT_MAX_THUMBNAILS"):
        assert getattr(map_cmd, name) == getattr(embedding_map, name), name


def test_umap_without_umap_learn_is_a_one_line_error(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("umap") is not None:
        pytest.skip("umap-learn is installed; nothing to refuse")
    store = clustered_store(tmp_path / "s", n=30)
    assert main(["map", str(store), "--layer", "f", "--method", "umap", "-o", str(tmp_path / "m.html")]) == 1
    assert "pip install umap-learn" in capsys.readouterr().err


def labelled_tasks(tmp_path: Path, n: int = 150) -> Path:
    """The clustered store with a regression task ``size`` (rising with the cluster, one row without a value), a
    classification task ``kind`` (the cluster's name, another spelling) and a multilabel task ``tags``."""
    store = clustered_store(tmp_path / "s", n=n)
    rows = [f"array:{i:05d}" for i in range(n)]
    (tmp_path / "size.csv").write_text("path,size\n" + "".join(f"{p},{10 * (i % 3) + i / n}\n"
                                                              for i, p in enumerate(rows) if i))
    (tmp_path / "kind.csv").write_text("path,kind\n" + "".join(f"{p},kind {i % 3}\n" for i, p in enumerate(rows)))
    (tmp_path / "tags.csv").write_text("path,tags\n" + "".join(f"{p},a|b\n" for p in rows))
    for table in ("size", "kind", "tags"):
        assert main(["label", str(store), str(tmp_path / f"{table}.csv")]) == 0
    return store


def test_map_colours_by_a_tasks_class_or_value(tmp_path, capsys):
    store = labelled_tasks(tmp_path)
    assert main(["map", str(store), "--layer", "f", "--task", "kind", "-o", str(tmp_path / "k.html"),
                 "--max-points", "90", "--no-progress"]) == 0
    assert "90 of 150 rows" in capsys.readouterr().out
    text = (tmp_path / "k.html").read_text()
    data = map_data(text)
    assert data["classes"] == ["kind 0", "kind 1", "kind 2"] and np.bincount(data["c"]).tolist() == [30, 30, 30]
    assert "v" not in data and "stratified sample (by task kind, seed 0)" in Page(text).all_text("about")

    assert main(["map", str(store), "--layer", "f", "--task", "size", "-o", str(tmp_path / "s.html"),
                 "--method", "pca", "--no-progress"]) == 0
    capsys.readouterr()
    text = (tmp_path / "s.html").read_text()
    data = map_data(text)
    # the values in quantile bins, low to high on the viridis scale; the row without a value is grey
    assert len(data["classes"]) == 9 and data["classes"][-1] == "(no size)"
    lows = [float(name.split(" to ")[0]) for name in data["classes"][:-1]]
    assert lows == sorted(lows) and data["colours"][0] == "#440154" and data["colours"][-1] == "#9aa3af"
    assert data["v"][0] is None and data["c"][0] == 8 and np.bincount(data["c"]).tolist()[-1] == 1
    values = np.asarray(data["v"][1:], dtype=float)
    codes = np.asarray(data["c"][1:])
    assert all(values[codes == k].max() <= values[codes == k + 1].min() for k in range(7))
    assert "Coloured by task size (its values in 8 quantile bins, low to high)" in Page(text).all_text("about")


def test_map_refuses_a_multilabel_or_unknown_task_in_one_line(tmp_path, capsys):
    store = labelled_tasks(tmp_path, n=30)
    capsys.readouterr()
    for task, expected in (("tags", "is multilabel: a map is coloured by a classification or regression task"),
                           ("nope", "task 'nope' is not in store")):
        assert main(["map", str(store), "--layer", "f", "--task", task, "-o", str(tmp_path / "m.html")]) == 1
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err
    assert not (tmp_path / "m.html").exists()
