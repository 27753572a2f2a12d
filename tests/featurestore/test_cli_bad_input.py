"""Bad input on the command line is one line on stderr, exit status 1, and nothing created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featurestore import ArraySource, ExtractConfig, extract, write_arrays
from featurestore.cli import main
from featurestore.errors import OptionsError
from featurestore.spec import SPEC_KEY, read_spec

REPO = Path(__file__).resolve().parents[2]


def _fails_in_one_line(capsys, *args) -> str:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith(f"featurestore {args[0]}: error: "), err
    return err


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_onnx):
    """Images, a store of two classes and a head fitted on it, a one-class store, and files that are no models."""
    root = tmp_path_factory.mktemp("bad-input")
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    extract(tiny_onnx, ArraySource(images, labels=[f"c{i % 2}" for i in range(40)]), root / "store",
            ExtractConfig(device="cpu", progress=False))
    assert main(["fit", str(root / "store"), "--head", "nb", "-o", str(root / "head.skops")]) == 0
    write_arrays(root / "one", {"f": rng.normal(size=(20, 4)).astype(np.float32)}, labels=["a"] * 20)
    (root / "text.onnx").write_text("this is a text file, not a model\n")
    (root / "random.onnx").write_bytes(rng.bytes(5000))
    _copied_spec_model(tiny_onnx, root / "copied.onnx")
    return root


def _copied_spec_model(exported: Path, path: Path) -> None:
    """A model from elsewhere (one Cast node) carrying the spec of ``exported``, copied."""
    import onnx
    from onnx import TensorProto, helper

    spec = read_spec(exported)
    h, w, c = spec.input_shape
    graph = helper.make_graph([helper.make_node("Cast", [spec.input_name], ["other"], to=TensorProto.FLOAT)], "other",
                              [helper.make_tensor_value_info(spec.input_name, TensorProto.UINT8, ["N", h, w, c])],
                              [helper.make_tensor_value_info("other", TensorProto.FLOAT, ["N", h, w, c])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, spec.to_json()
    onnx.save(model, str(path))


def test_fit_and_bench_on_a_single_class(work, tmp_path, capsys):
    err = _fails_in_one_line(capsys, "fit", work / "one", "--head", "nb", "-o", tmp_path / "h.skops")
    assert str(work / "one") in err and "class" in err
    err = _fails_in_one_line(capsys, "bench", work / "one", "-o", tmp_path / "report", "--heads", "nb")
    assert str(work / "one") in err and "one class" in err
    assert list(tmp_path.iterdir()) == []


def test_fit_with_a_parameter_of_the_wrong_type(work, tmp_path, capsys):
    err = _fails_in_one_line(capsys, "fit", work / "store", "--head", "nb", "--param", "var_smoothing=abc",
                             "-o", tmp_path / "h.skops")
    assert "var_smoothing" in err and "'abc'" in err
    assert list(tmp_path.iterdir()) == []


def test_extract_with_negative_workers(work, tiny_onnx, tmp_path, capsys):
    err = _fails_in_one_line(capsys, "extract", tiny_onnx, work / "imgs", "-o", tmp_path / "store", "--workers", "-2")
    assert "--workers" in err and "-2" in err
    assert not (tmp_path / "store").exists()
    with pytest.raises(OptionsError):
        ExtractConfig(intra_op_threads=0)


@pytest.mark.parametrize("model", ["text.onnx", "random.onnx", "copied.onnx"])
def test_a_file_that_is_not_an_exported_model(work, tmp_path, capsys, model):
    bad = work / model
    what = "does not match the featurestore spec" if model == "copied.onnx" else "is not an ONNX model"
    for args in (["extract", bad, work / "imgs", "-o", tmp_path / "store"],
                 ["extract", bad, work / "imgs", "-o", tmp_path / "store", "--engine", "ray"],
                 ["predict", bad, work / "head.skops", work / "imgs", "-o", tmp_path / "p.csv", "--device", "cpu"],
                 ["predict", bad, work / "imgs", "-o", tmp_path / "p.csv", "--device", "cpu"],
                 ["classify", bad, work / "imgs" / "0.png", "--device", "cpu"]):
        err = _fails_in_one_line(capsys, *args)
        assert str(bad) in err and what in err, err
    err = _fails_in_one_line(capsys, "package", bad, work / "head.skops", "-o", tmp_path / "c.onnx")
    # package reads the spec alone: the copied one passes it, and the head's model check refuses the file
    assert str(bad) in err and (what if model != "copied.onnx" else "another model") in err, err
    assert list(tmp_path.iterdir()) == []


def test_no_traceback_reaches_the_terminal(work, tmp_path):
    done = subprocess.run([sys.executable, "-m", "featurestore", "extract", str(work / "random.onnx"),
                           str(work / "imgs"), "-o", str(tmp_path / "store")],
                          check=False, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "store").exists()
