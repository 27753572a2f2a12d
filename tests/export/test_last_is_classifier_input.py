"""Acceptance 4 of the export issue: ``last`` is what each model's own classifier reads.

Every torchvision classification model and a sample of timm models across families, with
random weights and seeded normalisation statistics: the exported module (``FeatureGraph``,
uint8 images in) at ``last`` equals the reference within 1e-4 of its scale (1e-3 for
transformers). The reference is timm's ``forward_head(forward_features(x), pre_logits=True)``,
or the input of the torchvision model's final Linear/Conv classifier, averaged over space as
the logits are (``reference.classifier_input``); ``logits`` equals the model's output alongside.
Inputs are the smallest each model takes.
A smaller sample also goes through ONNX and onnxruntime (``test_any_backbone_parity``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from export import get_backbone
from export.graph import FeatureGraph
from export.layers import no_attention_fast_path, select_layers, trace_layers
from featurestore.spec import Preprocessing
from reference import assert_close_to_scale, classifier_input, normalise
from test_any_backbone_parity import randomize_norm_statistics

#: torchvision models whose builder fixes the input size: built for a smaller one.
_TORCHVISION_SIZE_KWARG = {"vit_": "image_size"}
#: The smallest input each torchvision model takes where it is not 32 x 32.
_TORCHVISION_SIZES = {"alexnet": 64, "inception_v3": 96, "maxvit_t": 224, "vit_h_14": 28}

#: timm models, the smallest variant of each of timm's model modules and of further architectures
#: (families), cheap ones: name -> input size.
TIMM: dict[str, int] = {
    "botnet26t_256": 64, "caformer_s18": 64, "cait_xxs24_224": 64, "coat_tiny": 64, "coatnet_pico_rw_224": 64,
    "coatnext_nano_rw_224": 64, "convformer_s18": 64, "convit_tiny": 64, "convmixer_768_32": 64,
    "convnext_zepto_rms": 64, "convnextv2_atto": 64, "cpubone_nano": 64, "cs3darknet_focus_s": 64,
    "cspnext_tiny": 64, "cspresnet50": 64, "cspresnext50": 64, "darknet17": 64, "deit_tiny_patch16_224": 64,
    "densenet121": 64, "dla46x_c": 64, "dpn48b": 64, "eca_botnext26ts_256": 64, "ecaresnext26t_32x4d": 64,
    "edgenext_xx_small": 64, "efficientformer_l1": 224, "efficientformerv2_s0": 64, "efficientnetv2_rw_t": 64,
    "efficientvim_m1": 64, "efficientvit_b0": 64, "ese_vovnet19b_slim_dw": 64, "eva02_tiny_patch14_224": 64,
    "fasternet_t0": 64, "fbnetc_100": 64, "gcvit_xxtiny": 64, "gernet_s": 64, "ghostnet_050": 64,
    "gmixer_12_224": 64, "gmlp_ti16_224": 64, "hrnet_w18_small": 64, "iformer_t": 64,
    "inception_next_atto": 64, "inception_v3": 96, "lambda_resnet26t": 64, "lcnet_035": 64, "lcnetv2_small": 64,
    "legacy_seresnet18": 64, "legacy_xception": 64, "levit_128s": 64, "lowformer_b0": 64, "mambaout_femto": 64,
    "maxvit_pico_rw_256": 64, "maxxvit_rmlp_nano_rw_256": 64, "maxxvitv2_nano_rw_256": 64, "mixer_s16_224": 64,
    "mixnet_s": 64, "mnasnet_small": 64, "mobilenet_edgetpu_100": 64, "mobilenetv3_small_050": 64,
    "mobileone_s1": 64, "mobilevit_xxs": 64, "mobilevitv2_050": 64, "nf_regnet_b0": 64, "pit_ti_224": 64,
    "poolformer_s12": 64, "poolformerv2_s12": 64, "regnetv_040": 64, "regnetx_002": 64, "regnety_002": 64,
    "regnetz_b16": 64, "repghostnet_050": 64, "repvgg_a0": 64, "repvit_m1": 64, "res2next50": 64,
    "resmlp_12_224": 64, "resnest14d": 64, "resnet32ts": 64, "resnetaa34d": 64, "resnetblur18": 64,
    "resnetv2_18": 64, "resnext26ts": 64, "rexnetr_100": 64, "sebotnet33ts_256": 64, "sedarknet21": 64,
    "semnasnet_050": 64, "sequencer2d_s": 64, "seresnet33ts": 64, "seresnext26ts": 64, "shvit_s1": 64,
    "skresnet18": 64, "skresnext50_32x4d": 64, "spnasnet_100": 64, "starnet_s050": 64,
    "swin_tiny_patch4_window7_224": 64, "swinv2_cr_tiny_224": 64, "test_byobnet": 64, "test_coatnet": 64,
    "test_convnext": 64, "test_efficientnet": 64, "test_mambaout": 64, "test_nfnet": 64, "test_resnet": 64,
    "test_vit": 64, "test_vit_relpos": 64, "tf_mixnet_s": 64, "tiny_vit_5m_224": 64, "tinynet_e": 64,
    "tnt_s_legacy_patch16_224": 64, "vit_tiny_patch16_dinov3_qkvb": 64, "vit_tiny_r_s16_p8_224": 64,
    "xception41p": 64, "xcit_nano_12_p8_224": 64,
}
#: timm models built for that input size (``img_size``); the others take any size.
_TIMM_IMG_SIZE = {
    "botnet26t_256", "cait_xxs24_224", "coat_tiny", "coatnet_pico_rw_224", "coatnext_nano_rw_224", "convit_tiny",
    "deit_tiny_patch16_224", "eca_botnext26ts_256", "efficientformerv2_s0", "eva02_tiny_patch14_224",
    "gcvit_xxtiny", "gernet_s", "gmixer_12_224", "gmlp_ti16_224", "lambda_resnet26t", "levit_128s",
    "maxvit_pico_rw_256", "maxxvit_rmlp_nano_rw_256", "maxxvitv2_nano_rw_256", "mixer_s16_224", "mobileone_s1",
    "mobilevit_xxs", "mobilevitv2_050", "pit_ti_224", "regnetz_b16", "repvgg_a0", "repvit_m1", "resmlp_12_224",
    "resnet32ts", "resnext26ts", "sebotnet33ts_256", "sequencer2d_s", "seresnet33ts", "seresnext26ts",
    "swin_tiny_patch4_window7_224", "swinv2_cr_tiny_224", "test_byobnet", "test_coatnet", "test_vit",
    "test_vit_relpos", "tnt_s_legacy_patch16_224", "vit_tiny_patch16_dinov3_qkvb", "vit_tiny_r_s16_p8_224",
    "xcit_nano_12_p8_224",
}


def _torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _is_transformer(model: nn.Module) -> bool:
    return any("attention" in type(m).__name__.lower() for m in model.modules())


def _check_last(model: nn.Module, size: int, mean, std) -> None:
    model = randomize_norm_statistics(model, seed=1)
    prep = Preprocessing(crop_size=(size, size), resize_size=size, mean=tuple(mean), std=tuple(std))
    layers = trace_layers(model, (size, size))
    classes = any(layer.name == "logits" for layer in layers)  # timm models built without classifier have none
    choices = select_layers(layers, "last,logits" if classes else "last")
    assert [c.layer.name for c in choices] == ["pre_logits", "logits"][:len(choices)], [c.layer.name for c in choices]
    images = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    x = normalise(images, prep)
    with torch.no_grad(), no_attention_fast_path():
        got = [t.numpy() for t in FeatureGraph(model, choices, prep)(torch.from_numpy(images))]
        want = [classifier_input(model, x).numpy(), model(x).numpy()]
    assert choices[0].layer.shape == want[0].shape[1:]
    rtol = 1e-3 if _is_transformer(model) else 1e-4
    for name, actual, expected in zip(("last", "logits"), got, want):
        assert_close_to_scale(actual, expected, rtol, name)


def _torchvision_model(name: str) -> tuple[nn.Module, int]:
    size = _TORCHVISION_SIZES.get(name, 32)
    torch.manual_seed(0)
    kwarg = next((v for k, v in _TORCHVISION_SIZE_KWARG.items() if name.startswith(k)), None)
    if kwarg:
        import torchvision

        return torchvision.models.get_model(name, weights=None, **{kwarg: size}), size
    return get_backbone(name).build(), size


@pytest.mark.slow
@pytest.mark.parametrize("name", _torchvision_names())
def test_torchvision_last_is_classifier_input(name):
    model, size = _torchvision_model(name)
    prep = get_backbone(name).preprocessing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check_last(model, size, prep.mean, prep.std)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TIMM))
def test_timm_last_is_forward_head_pre_logits(name):
    import timm

    from export._timm import hub_offline

    size = TIMM[name]
    torch.manual_seed(0)
    with hub_offline():
        model = timm.create_model(name, pretrained=False, **({"img_size": size} if name in _TIMM_IMG_SIZE else {}))
    prep = get_backbone(f"timm:{name}").preprocessing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check_last(model, size, prep.mean, prep.std)


def test_the_timm_sample_spans_at_least_100_models():
    assert len(TIMM) >= 100 and _TIMM_IMG_SIZE <= set(TIMM)


def test_stages_skip_a_pooling_classifier_and_cover_cait_patch_blocks():
    import timm
    import torchvision

    torch.manual_seed(0)
    squeezenet = torchvision.models.squeezenet1_1(weights=None)
    stages = select_layers(trace_layers(squeezenet, (64, 64)), "last,stages")
    assert [(c.layer.name, c.layer.channels) for c in stages] == [
        ("pre_logits", 512), ("features.1", 64), ("features.4", 128), ("features.7", 256), ("features.12", 512)]
    cait = timm.create_model("cait_xxs24_224", pretrained=False, img_size=64)
    stages = select_layers(trace_layers(cait, (64, 64)), "stages")
    assert [(c.layer.name, c.layer.prefix_tokens, c.pooling) for c in stages] == [
        (f"blocks.{i}", 0, "mean") for i in (5, 11, 17, 23)], "patch tokens only: no class token to pool"


def test_inception_v3_stages_are_its_blocks_not_branches():
    """Inception blocks whose parallel branches downsample are one stage each, not a run of branches
    (the five stages timm's inception_v3 declares in its feature_info)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    stages = select_layers(trace_layers(model.eval(), (299, 299)), "stages")
    assert [c.layer.name for c in stages] == ["Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"]
