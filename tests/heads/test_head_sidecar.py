"""The sidecar cannot lie: a head file carries what its predictions depend on, and predict/package check it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import skops.io as sio

from featurestore._atomic import file_sha256
from featurestore.cli import main
from heads import load_head
from heads.errors import HeadModelMismatchError
from heads.persist import sidecar_path

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fitted(pixels):
    """An nb head fitted on the pixels store (3 classes), and a second model file."""
    from export import export_backbone
    from featurestore import Preprocessing

    assert main(["fit", str(pixels / "store"), "--head", "nb", "-o", str(pixels / "nb.skops")]) == 0
    prep = Preprocessing(crop_size=(8, 8), resize_mode="exact", mean=(0.5,), std=(1.0,), color_mode="L")
    export_backbone("pixels", pixels / "other.onnx", preprocessing=prep)
    return pixels


def _copy_head(root: Path, tmp_path: Path, edit=None, old_format: bool = False) -> Path:
    """The fitted head under ``tmp_path``, its sidecar passed through ``edit`` (the head_sha256 stays valid)."""
    head = tmp_path / "h.skops"
    metadata = json.loads(sidecar_path(root / "nb.skops").read_text())
    if old_format:  # as save_head wrote heads before they carried their facts: the estimator alone
        estimator, _ = load_head(root / "nb.skops")
        sio.dump(estimator, head)
        metadata = {k: v for k, v in metadata.items() if k != "blocks"}
    else:
        head.write_bytes((root / "nb.skops").read_bytes())
    if edit is not None:
        edit(metadata)
    metadata["head_sha256"] = file_sha256(head)
    sidecar_path(head).write_text(json.dumps(metadata))
    return head


def _predict(root: Path, head: Path, out: Path, capsys, model: str = "p.onnx") -> tuple[int, str]:
    code = main(["predict", str(root / model), str(head), str(root / "pngs"), "-o", str(out), "--device", "cpu"])
    return code, capsys.readouterr().err


def _reverse(meta):
    meta["classes"] = meta["classes"][::-1]


def _extra_class(meta):
    meta["classes"] = meta["classes"] + ["extra"]


def _one_class_less(meta):
    meta["classes"] = meta["classes"][:-1]


def _twice(meta):
    meta["layers"] = meta["layers"] * 2


def _blocks(meta):
    meta["blocks"] = [32]


@pytest.mark.parametrize("edit", [_reverse, _extra_class, _one_class_less, _twice, _blocks])
def test_an_edited_sidecar_is_a_mismatch_in_one_line(fitted, tmp_path, capsys, edit):
    head = _copy_head(fitted, tmp_path, edit)
    with pytest.raises(HeadModelMismatchError):
        load_head(head)
    code, err = _predict(fitted, head, tmp_path / "p.csv", capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert str(head) in err or "h.skops.json" in err
    assert not (tmp_path / "p.csv").exists()
    assert main(["package", str(fitted / "p.onnx"), str(head), "-o", str(tmp_path / "c.onnx")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "c.onnx").exists()


def test_another_models_sha256_in_the_sidecar_is_a_mismatch(fitted, tmp_path, capsys):
    """The sidecar vouches for another model; the head file still knows the one it was fitted on."""
    other = file_sha256(fitted / "other.onnx")
    head = _copy_head(fitted, tmp_path, lambda meta: meta.update(model_sha256=other))
    code, err = _predict(fitted, head, tmp_path / "p.csv", capsys, model="other.onnx")
    assert code == 1 and err.count("\n") == 1, err
    assert "model_sha256" in err and "h.skops" in err
    assert not (tmp_path / "p.csv").exists()


def test_the_cli_prints_a_mismatch_as_one_line(fitted, tmp_path):
    head = _copy_head(fitted, tmp_path, _reverse)
    done = subprocess.run([sys.executable, "-m", "featurestore", "predict", str(fitted / "p.onnx"), str(head),
                           str(fitted / "pngs"), "-o", str(tmp_path / "p.csv"), "--device", "cpu"],
                          check=False, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "says classes" in done.stderr, done.stderr


def test_an_unedited_head_predicts(fitted, tmp_path, capsys):
    head = _copy_head(fitted, tmp_path)
    code, err = _predict(fitted, head, tmp_path / "p.csv", capsys)
    assert code == 0, err
    with open(tmp_path / "p.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and all(row["label"] in ("0", "1", "2") for row in rows)


def test_a_head_saved_before_heads_carried_their_facts_still_predicts(fitted, tmp_path, capsys):
    (tmp_path / "new").mkdir()
    new = _copy_head(fitted, tmp_path / "new")
    old = _copy_head(fitted, tmp_path, old_format=True)
    assert not isinstance(sio.load(old, trusted=sio.get_untrusted_types(file=old)), dict)
    assert _predict(fitted, new, tmp_path / "new.csv", capsys)[0] == 0
    code, err = _predict(fitted, old, tmp_path / "old.csv", capsys)
    assert code == 0, err
    assert (tmp_path / "old.csv").read_text() == (tmp_path / "new.csv").read_text()


@pytest.mark.parametrize("edit", [_one_class_less, _extra_class, _twice])
def test_a_head_saved_before_still_gets_the_checks_its_estimator_allows(fitted, tmp_path, capsys, edit):
    """Without facts inside, a class count other than the head's and repeated layers are still refused."""
    head = _copy_head(fitted, tmp_path, edit, old_format=True)
    code, err = _predict(fitted, head, tmp_path / "p.csv", capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert not (tmp_path / "p.csv").exists()
