"""Acceptance 4 of the export issue, and clear errors for bad input."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import torch

from export import (
    ExportError, LayerNotFoundError, UnknownBackboneError, WeightsError, WeightsRequiredError, export_backbone,
)
from export import BackboneEntry, register_backbone
from featurestore.cli import main
from featurestore.spec import Preprocessing
from tiny_models import TinyNet, tiny_net


def test_layers_command_prints_names_channels_strides(capsys):
    assert main(["layers", "mobilenet_v2"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["features.18"][1:3] == ["1280", "32"]
    assert rows["features.3"][1:3] == ["24", "4"]
    assert "stage" in rows["features.13"][-1]
    assert rows["pre_logits"][1] == "1280" and "last" in rows["pre_logits"][-1]


def test_unknown_backbone_lists_close_names(capsys):
    assert main(["layers", "mobilenetv2"]) == 1
    err = capsys.readouterr().err
    assert "unknown backbone 'mobilenetv2'" in err and "mobilenet_v2" in err
    with pytest.raises(UnknownBackboneError) as info:
        export_backbone("resnet5O", random_init=True)
    assert isinstance(info.value, KeyError) and "resnet50" in str(info.value)


def test_unknown_layer_lists_close_names(tmp_path):
    with pytest.raises(LayerNotFoundError) as info:
        export_backbone(tiny_net(), tmp_path / "x.onnx", layers="features.9", image_size=32)
    assert "did you mean: features.6" in str(info.value)
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(ExportError, match="unknown pooling"):
        export_backbone(tiny_net(), layers="features.1:median", image_size=32)


def test_missing_weights_is_never_silent(capsys):
    register_backbone(BackboneEntry("tiny-without-weights", TinyNet, Preprocessing(crop_size=(32, 32), resize_size=36)))
    with pytest.raises(WeightsRequiredError, match="--random-init"):
        export_backbone("tiny-without-weights")
    assert main(["export", "resnet18", "--offline", "-o", "unused.onnx"]) == 1  # nothing cached
    assert "--weights PATH" in capsys.readouterr().err


def test_weights_key_mismatch_lists_keys(tmp_path):
    state = tiny_net().state_dict()
    state["extra.weight"] = state.pop("fc.weight")
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as info:
        export_backbone(TinyNet(), weights=tmp_path / "bad.pth", image_size=32)
    message = str(info.value)
    assert "missing keys: fc.weight" in message and "unexpected keys: extra.weight" in message


def test_weights_file_round_trip_and_hash(tmp_path):
    torch.save(tiny_net(3).state_dict(), tmp_path / "w.pth")
    spec, _ = export_backbone(TinyNet(), weights=tmp_path / "w.pth", image_size=32)
    assert spec.weights.source == "file:w.pth" and spec.weights.random_init is False


class _Payload:
    def __reduce__(self):
        return (print, ("pickle payload ran",))


def test_pickled_objects_are_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"fc.weight": _Payload()}, fh)
    with pytest.raises(WeightsError, match="cannot read weights file"):
        export_backbone(TinyNet(), weights=tmp_path / "evil.pth", image_size=32)
    assert "payload ran" not in capsys.readouterr().out


def test_weights_and_random_init_conflict():
    with pytest.raises(ExportError, match="not both"):
        export_backbone("mobilenet_v2", weights="x.pth", random_init=True)
    with pytest.raises(ExportError, match="pixels"):
        export_backbone("mobilenet_v2", grayscale=True)



@pytest.mark.parametrize("backbone, layers", [("timm:vit_tiny_patch16_224", "all:mean"),
                                              ("timm:resnet18", "stages:grid2"),
                                              ("efficientnet_lite0", "last")])
def test_export_prints_only_our_own_lines(tmp_path, backbone, layers):
    """Tracing a ViT's blocks or grid pooling must not put torch's TracerWarnings (shape reads that
    are constants by design, the input size being fixed) on the user's terminal, nor EfficientNet-Lite's
    strided-Slice constant-folding notes."""
    out = tmp_path / "m.onnx"
    done = subprocess.run([sys.executable, "-m", "featurestore", "export", backbone, "--random-init",
                           "--layers", layers, "--image-size", "64", "-o", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    assert out.is_file()


def test_layers_at_another_image_size_for_a_vit(capsys):
    """A ViT's position embeddings follow --image-size also without pretrained weights."""
    assert main(["layers", "timm:vit_tiny_patch16_224", "--image-size", "64"]) == 0
    assert "17x192" in capsys.readouterr().out  # 4 x 4 patches and the class token
