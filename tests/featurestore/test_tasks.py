"""Tasks: named targets (classification, regression, multilabel) attached to a store by content key,
with `featurestore label`, read back by `load(task=...)` and listed by `info`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from featurestore import open_store, verify_store, write_arrays
from featurestore.cli import main
from featurestore.errors import (MalformedRecordError, OptionsError, StoreDamagedError, StoreError,
                                 TaskNotInStoreError, TaskTableError, UnsafeStoreError)
from featurestore.journal import read_journal
from featurestore.manifest import MANIFEST_NAME, Manifest
from featurestore.metadata import JournalRecord, TaskEntry, TaskPart
from featurestore.tasks import attach_task, infer_task_type, task_summary
from featurestore.writer import StoreWriter

ROWS = 8
FIXTURE = Path(__file__).parents[1] / "fixtures" / "v0_1" / "store"
STORE_V1 = Path(__file__).parent / "data" / "store_v1"


def _store(path: Path) -> Path:
    """8 rows of distinct content, labelled a/b, at paths /img/0.png ... /img/7.png."""
    features = np.arange(ROWS * 3, dtype=np.float32).reshape(ROWS, 3)
    write_arrays(path, {"f": features}, labels=["a", "b"] * (ROWS // 2), paths=[f"/img/{i}.png" for i in range(ROWS)])
    return path


def _table(path: Path, header: str, rows: list[tuple[str, str]]) -> Path:
    path.write_text(header + "\n" + "".join(f"{a},{b}\n" for a, b in rows), encoding="utf-8")
    return path


def test_a_regression_task_is_attached_by_path_and_loads_only_rows_with_a_value(tmp_path):
    store = _store(tmp_path / "s")
    table = _table(tmp_path / "angle.csv", "path,angle", [(f"/img/{i}.png", str(i * 10 - 20.5)) for i in range(5)])
    report = attach_task(store, table)
    assert (report.task, report.type, report.added, report.commits) == ("angle", "regression", 5, 1)
    opened = open_store(store)
    assert opened.tasks == {"label": "classification", "angle": "regression"}
    data = opened.load(task="angle")
    assert len(data) == 5 and data.task == "angle" and data.task_type == "regression" and data.classes == ()
    assert data.y.dtype == np.float64
    np.testing.assert_array_equal(data.y, [i * 10 - 20.5 for i in range(5)])
    np.testing.assert_array_equal(data.X["f"], np.arange(ROWS * 3, dtype=np.float32).reshape(ROWS, 3)[:5])
    assert verify_store(store) == []
    assert task_summary(opened)["angle"] == {"type": "regression", "rows": 5, "of": ROWS, "range": [-20.5, 19.5],
                                             "mean": -0.5}


def test_a_multilabel_task_loads_a_matrix_with_its_label_names(tmp_path):
    store = _store(tmp_path / "s")
    table = _table(tmp_path / "t.csv", "path,tags", [("/img/0.png", "cat|dog"), ("/img/1.png", "dog"),
                                                     ("/img/2.png", ""), ("/img/3.png", " dog | bird ")])
    report = attach_task(store, table)
    assert report.type == "multilabel" and report.empty == 1 and report.added == 3
    data = open_store(store).load(task="tags")
    assert data.classes == ("bird", "cat", "dog") and data.y.dtype == np.uint8
    np.testing.assert_array_equal(data.y, [[0, 1, 1], [0, 0, 1], [1, 0, 1]])
    assert data.labels.tolist() == ["cat|dog", "dog", "bird|dog"]


def test_a_classification_task_by_content_key_and_the_type_is_kept_on_update(tmp_path):
    store = _store(tmp_path / "s")
    keys = open_store(store).keys.tolist()
    table = _table(tmp_path / "g.csv", "sha256,group", [(k.upper(), "1" if i % 2 else "2") for i, k in enumerate(keys)])
    report = attach_task(store, table, key="sha256", task_type="classification")
    assert report.type == "classification" and report.added == ROWS
    data = open_store(store).load(task="group")
    assert data.classes == ("1", "2") and data.y.tolist() == [1, 0] * (ROWS // 2)
    update = _table(tmp_path / "g2.csv", "sha256,group", [(keys[0], "3")])
    report = attach_task(store, update, key="sha256")  # the existing type, not the inferred one
    assert (report.type, report.changed, report.unchanged) == ("classification", 1, 0)
    assert open_store(store).load(task="group").classes == ("1", "2", "3")
    with pytest.raises(TaskTableError, match="is classification, not regression"):
        attach_task(store, update, key="sha256", task_type="regression")


def test_the_task_label_updates_the_labels_every_reader_sees(tmp_path):
    store = _store(tmp_path / "s")
    before = open_store(store).load()
    assert before.classes == ("a", "b") and "label" in open_store(store).tasks
    table = _table(tmp_path / "fix.csv", "path,label", [("/img/0.png", "b"), ("/img/1.png", "b"), ("/img/2.png", "c")])
    report = attach_task(store, table)
    assert (report.task, report.changed, report.unchanged) == ("label", 2, 1)
    opened = open_store(store)
    assert opened.labels.tolist()[:4] == ["b", "b", "c", "b"] and opened.classes == ("a", "b", "c")
    data = opened.load()
    assert data.classes == ("a", "b", "c") and data.y.tolist()[:4] == [1, 1, 2, 1]
    assert attach_task(store, table).commits == 0  # the same table again: nothing to commit
    with pytest.raises(TaskTableError, match="not regression"):
        attach_task(store, table, task_type="regression")


def test_unmatched_conflicting_and_invalid_rows_are_reported_and_never_written(tmp_path):
    store = _store(tmp_path / "s")
    manifest = Manifest.load(store)
    writer = StoreWriter(store, manifest.config, manifest.spec)
    writer.add_alias(open_store(store).keys[0], "/img/copy.png", None, None)  # the content of /img/0.png again
    writer.close()
    table = _table(tmp_path / "y.csv", "path,y", [("/img/0.png", "1.5"), ("/img/copy.png", "2.5"), ("/img/2.png", "x"),
                                                  ("/img/3.png", "nan"), ("/nope.png", "1"), ("/img/4.png", "4")])
    report = attach_task(store, table, task_type="regression")
    assert {k: v[0] for k, v in report.problems.items()} == {"unmatched": 1, "conflicting": 1, "invalid": 2}
    assert "/nope.png" in report.problems["unmatched"][1][0]
    assert "1.5 (line 2)" in report.problems["conflicting"][1][0] and "2.5 (line 3)" in report.problems["conflicting"][1][0]
    data = open_store(store).load(task="y")
    assert data.y.tolist() == [4.0]  # only the row matched without doubt


def test_values_follow_content_through_re_extraction(tmp_path):
    store = _store(tmp_path / "s")
    attach_task(store, _table(tmp_path / "y.csv", "path,y", [("/img/0.png", "7"), ("/img/9.png", "9")]))
    spec, config = Manifest.load(store).spec, Manifest.load(store).config
    writer = StoreWriter(store, config, spec)  # a later run adds rows; the task stays
    writer.add_rows([f"{i:064x}" for i in range(3)], [0] * 3, ["c"] * 3, [None] * 3, [f"/new/{i}" for i in range(3)],
                    {"f": np.ones((3, 3), dtype=np.float32)})
    writer.add_alias(open_store(store).keys[0], "/copy/of/0.png", None, None)
    writer.close(run={"source": "more"})
    opened = open_store(store)
    assert len(opened) == ROWS + 3 and opened.load(task="y").y.tolist() == [7.0]
    report = attach_task(store, _table(tmp_path / "z.csv", "path,y", [("/copy/of/0.png", "8"), ("/new/1", "1")]))
    assert (report.changed, report.added) == (1, 1)  # matched by an alias path, and a new row
    assert open_store(store).load(task="y").y.tolist() == [8.0, 1.0]
    assert verify_store(store) == []


def test_many_commits_are_merged_into_one_file_and_leftovers_are_cleared(tmp_path):
    store = _store(tmp_path / "s")
    table = _table(tmp_path / "y.csv", "path,y", [(f"/img/{i}.png", str(i)) for i in range(ROWS)])
    (store / "tasks").mkdir()
    (store / "tasks" / "left-by-a-kill.h5").write_bytes(b"x")
    report = attach_task(store, table, commit_rows=3)
    assert report.commits == 4  # 3 + 3 + 2 values, then one merge
    entry = Manifest.load(store).tasks["y"]
    assert len(entry.parts) == 1 and entry.parts[0].rows == ROWS
    assert sorted(p.name for p in (store / "tasks").iterdir()) == [Path(entry.parts[0].file).name]
    assert open_store(store).load(task="y").y.tolist() == list(map(float, range(ROWS)))
    assert read_journal(store).records == []  # checkpointed


def test_stores_without_tasks_keep_their_bytes_and_old_stores_take_tasks(tmp_path):
    store = _store(tmp_path / "s")
    assert "tasks" not in json.loads((store / MANIFEST_NAME).read_text())
    for fixture in (FIXTURE, STORE_V1):
        copy = tmp_path / fixture.name
        shutil.copytree(fixture, copy)
        keys = list(dict.fromkeys(open_store(copy).keys.tolist()))  # every view of a key gets its value
        table = _table(tmp_path / f"{fixture.name}.csv", "sha256,score", [(k, str(i)) for i, k in enumerate(keys)])
        attach_task(copy, table, key="sha256")
        assert verify_store(copy) == []
        data = open_store(copy).load(task="score", view=None)
        assert sorted(data.y.tolist()) == sorted(float(keys.index(k)) for k in data.keys.tolist())


def test_bad_requests_are_typed_one_line_errors(tmp_path, capsys):
    store = _store(tmp_path / "s")
    table = _table(tmp_path / "y.csv", "path,y", [("/img/0.png", "1")])
    with pytest.raises(TaskNotInStoreError, match="tasks: label"):
        open_store(store).load(task="nope")
    with pytest.raises(OptionsError, match="task name"):
        attach_task(store, table, task="../x")
    with pytest.raises(OptionsError, match="--key"):
        attach_task(store, table, key="md5")
    with pytest.raises(TaskTableError, match="no sha256 or key column"):
        attach_task(store, table, key="sha256")
    wide = tmp_path / "wide.csv"
    wide.write_text("path,a,b\n/img/0.png,1,2\n")
    with pytest.raises(TaskTableError, match="name one with --task"):
        attach_task(store, wide)
    assert attach_task(store, wide, task="b").type == "regression"
    with pytest.raises(TaskTableError, match="does not exist"):
        attach_task(store, tmp_path / "missing.csv")
    with pytest.raises(StoreError, match="not a feature store"):
        attach_task(tmp_path / "nostore", table)
    assert not (tmp_path / "nostore").exists()
    assert main(["label", str(store), str(tmp_path / "missing.csv")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "featurestore label: error: table" in err
    assert main(["label", str(store), str(table), "--task", "y"]) == 0
    assert "task y (regression)" in capsys.readouterr().out
    assert main(["info", str(store)]) == 0
    assert "y                      regression     1/8 rows  range [1, 1]" in capsys.readouterr().out


def test_task_records_are_validated(tmp_path):
    entry = TaskEntry("t", "regression", (TaskPart("tasks/a.h5", 3, "xxh3_128:00"),))
    assert TaskEntry.from_dict(entry.to_dict()) == entry
    record = JournalRecord(seq=4, task=entry)
    assert JournalRecord.from_dict(record.to_dict()) == record
    for bad, message in (({"name": "t", "type": "ordinal", "parts": []}, "task.type"),
                         ({"name": "", "type": "regression", "parts": []}, "task.name"),
                         ({"name": "t", "type": "regression", "parts": [{"file": 3, "rows": 1, "checksum": ""}]},
                          r"task.parts\[0\]"),
                         ({"name": "t", "type": "regression", "parts": {}}, "task.parts"),
                         ([], "task is")):
        with pytest.raises(MalformedRecordError, match=message):
            TaskEntry.from_dict(bad)
        with pytest.raises(MalformedRecordError, match="its task"):
            JournalRecord.from_dict({"seq": 1, "task": bad})
    assert infer_task_type(["1", "2.5", "-3e2"]) == "regression"
    assert infer_task_type(["a|b", "c"]) == "multilabel" and infer_task_type(["a", "1"]) == "classification"


def _rewrite_manifest(store: Path, change) -> None:
    data = json.loads((store / MANIFEST_NAME).read_text())
    change(data)
    (store / MANIFEST_NAME).write_text(json.dumps(data))


def test_a_hostile_task_entry_or_file_is_refused(tmp_path):
    store = _store(tmp_path / "s")
    attach_task(store, _table(tmp_path / "y.csv", "path,y", [("/img/0.png", "1")]))
    for name, change, error in (
            ("outside", lambda d: d["tasks"][0]["parts"][0].update(file="tasks/../manifest.json"), UnsafeStoreError),
            ("malformed", lambda d: d["tasks"][0].update(type=7), StoreDamagedError),
            ("twice", lambda d: d["tasks"].append(d["tasks"][0]), StoreDamagedError)):
        copy = tmp_path / name
        shutil.copytree(store, copy)
        _rewrite_manifest(copy, change)
        with pytest.raises(error):
            open_store(copy)
    part = Manifest.load(store).tasks["y"].parts[0]
    path = store / part.file
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    with pytest.raises(StoreDamagedError, match="differs from its checksum"):
        open_store(store).load(task="y")
    assert any("task y" in problem for problem in verify_store(store))
    path.unlink()
    path.symlink_to(tmp_path / "y.csv")
    with pytest.raises(UnsafeStoreError):
        open_store(store).load(task="y")


_COMMIT_AND_DIE = """
import os, sys
from featurestore.manifest import Manifest
from featurestore.metadata import JournalRecord, TaskEntry
from featurestore.task_files import write_task_part
from featurestore.writer import StoreWriter

manifest = Manifest.load(sys.argv[1])
writer = StoreWriter(sys.argv[1], manifest.config, manifest.spec)
part = write_task_part(writer.path, "late.h5", "regression", [sys.argv[2]], [5.0])
writer.commit_record(JournalRecord(task=TaskEntry("late", "regression", (part,))))
os._exit(0)
"""


def test_repair_keeps_the_tasks_of_the_checkpoint_and_of_the_journal(tmp_path):
    import subprocess
    import sys

    from featurestore.repair import repair_store

    store = _store(tmp_path / "s")
    attach_task(store, _table(tmp_path / "y.csv", "path,y", [("/img/0.png", "1")]))
    key = open_store(store).keys[3]
    subprocess.run([sys.executable, "-c", _COMMIT_AND_DIE, str(store), key], check=True)
    assert len(read_journal(store).records) == 1
    (store / Manifest.load(store).index.file).unlink()
    repair_store(store)
    opened = open_store(store)
    assert opened.load(task="y").y.tolist() == [1.0] and opened.load(task="late").keys.tolist() == [key]
    assert verify_store(store) == []


def test_a_csv_sources_extra_columns_become_tasks_at_extraction(tiny_onnx, tmp_path, capsys):
    from featurestore import ExtractConfig, extract
    from images import write_good_images

    images = write_good_images(tmp_path / "imgs", n=4)
    table = tmp_path / "list.csv"
    rows = [("angle", "tags", "digit", "notes (free)")] + [(f"{i * 5 - 7.5}", "a|b" if i % 2 else "b", str(i % 2), "x")
                                                           for i in range(4)]
    table.write_text("path,label,split,angle,tags,digit,notes (free)\n" + "".join(
        f"imgs/{p.name},c{i % 2},train,{','.join(rows[i + 1])}\n" for i, p in enumerate(images)), encoding="utf-8")
    options = ExtractConfig(device="cpu", batch_size=2, progress=False, task_types=("digit=classification",))
    report = extract(tiny_onnx, table, tmp_path / "s", options)
    assert [(t.task, t.type, t.added) for t in report.tasks] == [
        ("angle", "regression", 4), ("tags", "multilabel", 4), ("digit", "classification", 4)]
    store = open_store(tmp_path / "s")
    assert store.tasks == {"label": "classification", "angle": "regression", "tags": "multilabel",
                           "digit": "classification"}
    assert store.load(task="angle").y.tolist() == [-7.5, -2.5, 2.5, 7.5]
    assert store.load(task="tags").y.tolist() == [[0, 1], [1, 1], [0, 1], [1, 1]]
    assert store.load(task="digit").classes == ("0", "1")
    again = extract(tiny_onnx, table, tmp_path / "s", options)
    assert again.decoded == 0 and [t.commits for t in again.tasks] == [0, 0, 0]
    assert verify_store(tmp_path / "s") == []
    with pytest.raises(OptionsError, match="not a task column"):
        extract(tiny_onnx, table, tmp_path / "t", ExtractConfig(device="cpu", task_types=("nope=regression",)))
    assert not (tmp_path / "t").exists()
    with pytest.raises(OptionsError, match="NAME=TYPE"):
        ExtractConfig(task_types=("digit=ordinal",))
    assert main(["extract", str(tiny_onnx), str(table), "-o", str(tmp_path / "u"), "--device", "cpu",
                 "--no-progress", "--task-type", "digit=regression,angle=regression"]) == 0
    assert "task digit (regression)" in capsys.readouterr().out


def test_a_store_being_written_is_refused_untouched_and_info_json_lists_tasks(tmp_path, capsys):
    from featurestore.errors import StoreLockedError

    store = _store(tmp_path / "s")
    table = _table(tmp_path / "y.csv", "path,y", [("/img/0.png", "1")])
    manifest = Manifest.load(store)
    before = (store / MANIFEST_NAME).read_bytes()
    writer = StoreWriter(store, manifest.config, manifest.spec)
    try:
        with pytest.raises(StoreLockedError):
            attach_task(store, table)
    finally:
        writer.close()
    assert (store / MANIFEST_NAME).read_bytes() == before and not (store / "tasks").exists()
    attach_task(store, table)
    assert main(["info", str(store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tasks"]["y"] == {"type": "regression", "rows": 1, "of": ROWS, "range": [1.0, 1.0], "mean": 1.0}
