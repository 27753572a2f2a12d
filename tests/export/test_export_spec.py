"""Acceptance 5 (and format rules) of the export issue: byte-identical re-export, spec round trip."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import onnx
import pytest

from export import export_backbone
from featurestore import SpecError, read_spec
from featurestore.session import FeatureModel
from featurestore.spec import SPEC_KEY, ModelSpec
from tiny_models import tiny_net


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reexport_is_byte_identical_named_backbone(tmp_path):
    for name in ("a", "b"):
        export_backbone("mobilenet_v2", tmp_path / f"{name}.onnx", layers="stages,logits")
    assert _sha(tmp_path / "a.onnx") == _sha(tmp_path / "b.onnx")


def test_reexport_is_byte_identical_random_init_and_module(tmp_path):
    export_backbone("resnet18", tmp_path / "a.onnx", random_init=True, image_size=64)
    export_backbone("resnet18", tmp_path / "b.onnx", random_init=True, image_size=64)
    assert _sha(tmp_path / "a.onnx") == _sha(tmp_path / "b.onnx")
    export_backbone(tiny_net(), tmp_path / "c.onnx", image_size=32)
    export_backbone(tiny_net(), tmp_path / "d.onnx", image_size=32)
    assert _sha(tmp_path / "c.onnx") == _sha(tmp_path / "d.onnx")


def test_spec_round_trips_through_file(tmp_path):
    spec, data = export_backbone(tiny_net(), tmp_path / "t.onnx", layers="stages,last,logits", image_size=32)
    read = read_spec(tmp_path / "t.onnx")
    assert read == spec
    assert ModelSpec.from_json(read.to_json()) == read
    assert read.to_json() == spec.to_json()
    assert read.weights.source == "module" and len(read.weights.sha256) == 64
    assert {"torch", "onnx", "featurestore"} <= set(read.versions)
    assert read.opset >= 17


def test_crop_offset_is_written_only_when_not_torchvisions(tmp_path):
    """The default ``round`` leaves the spec's JSON and the store fingerprint as they were before the
    field existed; ``floor`` is written, read back and changes the fingerprint."""
    from featurestore.manifest import StoreConfig

    spec, _ = export_backbone(tiny_net(), tmp_path / "t.onnx", layers="last", image_size=32)
    assert spec.preprocessing.crop_offset == "round"
    assert "crop_offset" not in spec.to_dict()["preprocessing"]
    old_prep = {k: v for k, v in dataclasses.asdict(spec.preprocessing).items() if k != "crop_offset"}
    assert StoreConfig.from_spec(spec, "0" * 64).preprocessing == json.dumps(old_prep, sort_keys=True,
                                                                             separators=(",", ":"))
    floor = dataclasses.replace(spec, preprocessing=dataclasses.replace(spec.preprocessing, crop_offset="floor"))
    assert floor.to_dict()["preprocessing"]["crop_offset"] == "floor"
    assert ModelSpec.from_json(floor.to_json()) == floor
    assert (StoreConfig.from_spec(floor, "0" * 64).fingerprint != StoreConfig.from_spec(spec, "0" * 64).fingerprint)


def test_graph_format(tmp_path):
    spec, _ = export_backbone(tiny_net(), tmp_path / "t.onnx", layers="stages,last", image_size=32)
    model = onnx.load(str(tmp_path / "t.onnx"))
    onnx.checker.check_model(model, full_check=True)
    (inp,) = model.graph.input
    assert inp.name == spec.input_name
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    assert [o.name for o in model.graph.output] == [layer.output for layer in spec.layers]
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert [p.key for p in model.metadata_props] == [SPEC_KEY]


def test_random_init_is_recorded(tmp_path):
    spec, _ = export_backbone("resnet18", tmp_path / "r.onnx", random_init=True, image_size=64)
    assert spec.weights.random_init is True and spec.weights.source == "random-init"


def test_pixels_baseline(tmp_path):
    spec, _ = export_backbone("pixels", tmp_path / "p.onnx", image_size=28, grayscale=True)
    assert spec.input_shape == (28, 28, 1)
    (layer,) = spec.layers
    assert layer.name == "pixels" and layer.dim == 28 * 28
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    out = FeatureModel(tmp_path / "p.onnx", device="cpu").run(images)["pixels"]
    np.testing.assert_allclose(out, images.reshape(4, -1) / 255.0, rtol=0, atol=1e-7)


def test_read_spec_refuses_foreign_onnx_and_future_versions(tmp_path):
    spec, data = export_backbone(tiny_net(), tmp_path / "t.onnx", image_size=32)
    model = onnx.load(str(tmp_path / "t.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "plain.onnx"))
    with pytest.raises(SpecError, match="no featurestore spec"):
        read_spec(tmp_path / "plain.onnx")
    future = spec.to_dict() | {"schema_version": 99}
    with pytest.raises(SpecError, match="schema version 99"):
        ModelSpec.from_dict(future)
    with pytest.raises(FileNotFoundError):
        read_spec(tmp_path / "missing.onnx")
