"""Acceptance 3 and 5 of the pretrained-weights issue, Hugging Face transformers: vision models
from a ``save_pretrained`` folder and from a Hugging Face Hub cache laid out as huggingface_hub
writes it, equal to transformers' own outputs, with the image processor's preprocessing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from export import export_backbone, fetch_weights, get_backbone
from export._hf import hf_cached_names
from export.errors import MissingExtraError, RemoteCodeError, WeightsError, WeightsNotCachedError
from featurestore import read_spec
from featurestore._atomic import file_sha256
from featurestore.cli import main
from featurestore.decode import preprocess_pil
from featurestore.session import FeatureModel
from reference import assert_close_to_scale

REVISION = "fedcba9876543210fedcba9876543210fedcba98"
IMAGENET = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
CARD = "---\nlicense: apache-2.0\ntags:\n- vision\n---\n# tiny test model\n"


def _seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        return build().eval()


def _dinov2():
    config = transformers.Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=64,
        patch_size=8, num_register_tokens=4, layerscale_value=0.5)
    processor = transformers.BitImageProcessorPil(
        size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}, do_center_crop=True, resample=3, **IMAGENET)
    return _seeded(lambda: transformers.Dinov2WithRegistersModel(config)), processor


def _clip():
    config = transformers.CLIPConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                           image_size=32, patch_size=8),
        text_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         vocab_size=64, max_position_embeddings=16), projection_dim=24)
    processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return _seeded(lambda: transformers.CLIPModel(config)), processor


MODELS = {"dinov2": _dinov2, "clip": _clip}


def _save(model, processor, folder: Path, card: bool = True) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if card:
        (folder / "README.md").write_text(CARD)
    return folder


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _to_cache(folder: Path, repo: str, files=None) -> Path:
    """Lay ``folder``'s files out in the Hugging Face Hub cache as huggingface_hub writes them:
    ``models--ORG--NAME/blobs/ETAG`` (an LFS file's sha256, else its git blob sha1),
    ``snapshots/REVISION/FILE`` linking to the blob, ``refs/main`` holding the revision."""
    repo_folder = Path(os.environ["HF_HUB_CACHE"]) / ("models--" + repo.replace("/", "--"))
    for item in sorted(folder.iterdir()):
        if files is not None and item.name not in files:
            continue
        data = item.read_bytes()
        lfs = item.suffix in (".safetensors", ".bin")
        blob = repo_folder / "blobs" / (hashlib.sha256(data).hexdigest() if lfs else _git_blob_sha1(data))
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo_folder / "snapshots" / REVISION / item.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_folder / "refs").mkdir(exist_ok=True)
    (repo_folder / "refs" / "main").write_text(REVISION)
    return repo_folder / "snapshots" / REVISION


def _reference(kind: str, model, processor, images: np.ndarray) -> dict[str, np.ndarray]:
    """transformers' own outputs for uint8 images the size of the crop, normalised by the processor."""
    pixels = processor([Image.fromarray(i) for i in images], do_resize=False, do_center_crop=False,
                       return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        if kind == "clip":
            clip = transformers.CLIPModel.from_pretrained(model)
            out = clip.vision_model(pixel_values=pixels, output_hidden_states=True)
            embeds = clip.get_image_features(pixel_values=pixels).pooler_output
            return {"pre_logits": out.pooler_output, "pooler_output": out.pooler_output, "image_embeds": embeds,
                    "vision_model.encoder.layers.1.none": out.hidden_states[2],
                    "vision_model.encoder.layers.2.cls": out.hidden_states[3][:, 0]}
        out = transformers.AutoModel.from_pretrained(model)(pixel_values=pixels, output_hidden_states=True)
        return {"pre_logits": out.pooler_output, "encoder.layer.1.none": out.hidden_states[2],
                "encoder.layer.2.mean": out.hidden_states[3][:, 5:].mean(1),
                "layernorm.cls+mean": torch.cat([out.last_hidden_state[:, 0],
                                                 out.last_hidden_state[:, 5:].mean(1)], 1)}


LAYERS = {"dinov2": "last,encoder.layer.1:none,encoder.layer.2:mean,layernorm:cls+mean",
          "clip": "last,pooler_output,image_embeds,vision_model.encoder.layers.1:none,vision_model.encoder.layers.2:cls"}


@pytest.mark.parametrize("kind", ["dinov2", "clip"])
def test_hf_model_from_folder_and_cache_equals_transformers(kind, tmp_path, monkeypatch):
    model, processor = MODELS[kind]()
    folder = _save(model, processor, tmp_path / kind)
    snapshot = _to_cache(folder, f"tiny-org/{kind}")
    out = tmp_path / "m.onnx"
    # sockets are blocked and no offline flag is set: the cached files are used without a network call
    assert main(["export", f"hf:tiny-org/{kind}", "--layers", LAYERS[kind], "-o", str(out)]) == 0
    spec = read_spec(out)
    assert spec.weights == type(spec.weights)(f"hf:tiny-org/{kind}", file_sha256(snapshot / "model.safetensors"),
                                              False, family="hf", tag=f"tiny-org/{kind}@{REVISION}",
                                              license="apache-2.0")
    from_folder, _ = export_backbone(f"hf:{folder}", tmp_path / "folder.onnx", layers=LAYERS[kind])
    assert from_folder.weights.sha256 == spec.weights.sha256 and from_folder.layers == spec.layers
    assert from_folder.preprocessing == spec.preprocessing
    if kind == "dinov2":
        tokens = next(layer for layer in spec.layers if layer.name == "encoder.layer.1")
        assert tokens.prefix_tokens == 5  # the class token and 4 registers

    size = spec.preprocessing.crop_size
    images = np.random.default_rng(1).integers(0, 256, (2, *size, 3), dtype=np.uint8)
    want = _reference(kind, str(folder), processor, images)
    for onnx_file in (out, tmp_path / "folder.onnx"):
        got = FeatureModel(onnx_file, device="cpu").run(images)
        assert set(got) == set(want)
        for name, value in want.items():
            assert_close_to_scale(got[name], value.numpy(), 1e-4, f"{kind} {name}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline, _ = export_backbone(f"hf:tiny-org/{kind}", layers="last")
    assert offline.weights.sha256 == spec.weights.sha256


def _real_image() -> Image.Image:
    """A photograph (scikit-learn's sample image, 427x640, not square): resized to a shorter side of
    224 or 256 and cropped to 224, its width leaves a margin of 111 or 159 (3 mod 4), where
    transformers' floored offset (55, 79) and torchvision's rounded one (56, 80) are one pixel apart."""
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image("china.jpg"))


@pytest.mark.parametrize("processor", [
    transformers.BitImageProcessorPil(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                                      do_center_crop=True, resample=3, **IMAGENET),
    transformers.CLIPImageProcessorPil(),
    transformers.ConvNextImageProcessorPil(size={"shortest_edge": 224}),
    transformers.ConvNextImageProcessorPil(size={"shortest_edge": 384}),
    transformers.ViTImageProcessorPil(),
    transformers.SiglipImageProcessorPil(),
    transformers.BeitImageProcessorPil(size={"height": 224, "width": 224}, do_center_crop=False, do_rescale=True,
                                       rescale_factor=1 / 127.5, image_mean=[1.0] * 3, image_std=[1.0] * 3),
], ids=["dinov2", "clip", "convnext", "convnext384", "vit", "siglip", "rescale"])
def test_preprocessing_equals_the_image_processor(processor, tmp_path):
    """The host's resize and crop plus the graph's scaling give the processor's pixel_values on a
    non-square photograph with an odd crop margin: both resize with Pillow and both floor the crop
    offset, so the difference is float rounding alone (1e-5)."""
    from export._hf import processor_preprocessing

    prep = processor_preprocessing(processor)
    image = _real_image()
    host = preprocess_pil(image, prep).astype(np.float32)
    ours = (host / 255.0 - np.array(prep.mean, np.float32)) / np.array(prep.std, np.float32)
    want = processor(image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    assert ours.shape == want.shape
    assert float(np.abs(ours - want).max()) < 1e-5
    if prep.resize_mode == "shorter_side":  # the crop's margin is odd: torchvision's offset would be a pixel off
        assert prep.crop_offset == "floor"
        rounded = preprocess_pil(image, dataclasses.replace(prep, crop_offset="round")).astype(np.float32)
        assert float(np.abs((rounded / 255.0 - np.array(prep.mean, np.float32)) / np.array(prep.std, np.float32)
                            - want).max()) > 0.1


def test_preprocessing_comes_from_the_repos_processor(tmp_path):
    model, processor = _dinov2()
    folder = _save(model, processor, tmp_path / "d")
    prep = get_backbone(f"hf:{folder}").preprocessing
    assert (prep.resize_size, prep.crop_size, prep.interpolation) == (64, (56, 56), "bicubic")
    assert prep.crop_offset == "floor"  # transformers' centre crop, kept when --image-size changes the size
    from export.exporter import _preprocessing

    assert _preprocessing(f"hf:{folder}", 48, False, None).crop_offset == "floor"
    assert prep.mean == pytest.approx(IMAGENET["image_mean"]) and prep.std == pytest.approx(IMAGENET["image_std"])


def test_offline_without_cached_repo_is_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.onnx"
    cache = os.environ["HF_HUB_CACHE"]
    assert main(["export", "hf:tiny-org/absent", "--offline", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and not out.exists()
    for part in ("hf:tiny-org/absent", "config.json", cache, "featurestore fetch hf:tiny-org/absent",
                 "models--tiny-org--absent"):
        assert part in err, part
    model, processor = _dinov2()
    folder = _save(model, processor, tmp_path / "d")
    _to_cache(folder, "tiny-org/noweights", files={"config.json", "preprocessor_config.json"})
    monkeypatch.setenv("FEATURESTORE_OFFLINE", "1")
    capsys.readouterr()
    assert main(["export", "hf:tiny-org/noweights", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and not out.exists() and "model.safetensors" in err and cache in err
    with pytest.raises(WeightsNotCachedError):
        fetch_weights("hf:tiny-org/noweights")


def test_remote_code_is_refused_by_name(tmp_path, capsys):
    model, processor = _dinov2()
    folder = _save(model, processor, tmp_path / "d")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    _to_cache(folder, "evil-org/remote")
    out = tmp_path / "m.onnx"
    capsys.readouterr()
    assert main(["export", "hf:evil-org/remote", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "evil-org/remote" in err and "trust_remote_code" in err and not out.exists()
    config.pop("auto_map")
    config["model_type"] = "evil_architecture"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RemoteCodeError, match="evil_architecture"):
        export_backbone(f"hf:{folder}")


def test_missing_transformers_is_one_line(tmp_path, monkeypatch):
    model, processor = _dinov2()
    folder = _save(model, processor, tmp_path / "d")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'featurestore\[hf\]'"):
        export_backbone(f"hf:{folder}")


def test_missing_weights_are_an_error_never_random(tmp_path):
    from safetensors.torch import load_file, save_file

    model, processor = _dinov2()
    folder = _save(model, processor, tmp_path / "d")
    state = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in state.items() if "layer.3." not in k}, folder / "model.safetensors")
    with pytest.raises(WeightsError, match="encoder.layer.3"):
        export_backbone(f"hf:{folder}")


class Hostile:
    """Not a tensor: unpickling it would run code of the file's choosing."""


def test_pytorch_model_bin_is_read_as_tensors(tmp_path):
    model, processor = _dinov2()
    folder = _save(model, processor, tmp_path / "d", card=False)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    spec, _ = export_backbone(f"hf:{folder}")
    assert spec.weights.sha256 == file_sha256(folder / "pytorch_model.bin") and spec.weights.license is None
    torch.save({"embeddings.cls_token": Hostile()}, folder / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="as a state_dict"):
        export_backbone(f"hf:{folder}")


def test_cached_names_and_fetch(tmp_path):
    model, processor = _clip()
    folder = _save(model, processor, tmp_path / "c")
    snapshot = _to_cache(folder, "tiny-org/clip")
    (Path(os.environ["HF_HUB_CACHE"]) / "models--tiny-org--empty" / "snapshots").mkdir(parents=True)
    assert hf_cached_names() == ["hf:tiny-org/clip"]
    assert fetch_weights("hf:tiny-org/clip", offline=True) == (str(snapshot / "model.safetensors"),
                                                                "hf:tiny-org/clip")


def _tiny(kind: str):
    t = transformers
    common = dict(num_channels=3)
    if kind == "vit":
        return t.ViTForImageClassification(t.ViTConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, image_size=32,
            patch_size=8, num_labels=3, id2label={0: "cat", 1: "dog", 2: "fox"}, label2id={"cat": 0, "dog": 1, "fox": 2},
            architectures=["ViTForImageClassification"])), t.ViTImageProcessorPil(size={"height": 32, "width": 32})
    if kind == "convnext":
        return t.ConvNextModel(t.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1], **common)), \
            t.ConvNextImageProcessorPil(size={"shortest_edge": 64})
    if kind == "convnextv2":
        return t.ConvNextV2Model(t.ConvNextV2Config(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1])), \
            t.ConvNextImageProcessorPil(size={"shortest_edge": 64})
    if kind == "swin":
        return t.SwinModel(t.SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 2, 1],
                                        num_heads=[1, 2, 2, 2], window_size=2)), \
            t.ViTImageProcessorPil(size={"height": 64, "width": 64})
    if kind == "beit":
        return t.BeitModel(t.BeitConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                        intermediate_size=64, image_size=32, patch_size=8,
                                        use_relative_position_bias=True, use_mean_pooling=True)), \
            t.BeitImageProcessorPil(size={"height": 32, "width": 32}, do_center_crop=False)
    if kind == "resnet":
        return t.ResNetModel(t.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                            layer_type="basic")), \
            t.ConvNextImageProcessorPil(size={"shortest_edge": 64})
    if kind == "siglip":
        config = t.SiglipConfig(
            vision_config=dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                               image_size=32, patch_size=8),
            text_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             vocab_size=64, max_position_embeddings=16))
        return t.SiglipModel(config), t.SiglipImageProcessorPil(size={"height": 32, "width": 32})
    if kind == "dinov2":
        return t.Dinov2Model(t.Dinov2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                            intermediate_size=64, image_size=32, patch_size=8)), \
            t.BitImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    if kind == "dinov2-classifier":
        return t.Dinov2ForImageClassification(t.Dinov2Config(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, image_size=32,
            patch_size=8, num_labels=5, architectures=["Dinov2ForImageClassification"])), \
            t.BitImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    raise ValueError(kind)


@pytest.mark.parametrize("kind, blocks, width", [
    ("vit", ["vit.layers.0", "vit.layers.1", "vit.layers.2"], 32),
    ("convnext", ["encoder.stages.0", "encoder.stages.1", "encoder.stages.2", "encoder.stages.3"], 32),
    ("convnextv2", ["encoder.stages.0", "encoder.stages.1", "encoder.stages.2", "encoder.stages.3"], 32),
    ("swin", ["hidden_states.0", "hidden_states.1", "hidden_states.2", "hidden_states.3", "hidden_states.4"], 128),
    ("beit", ["layers.0", "layers.1", "layers.2"], 32),
    ("resnet", ["encoder.stages.0", "encoder.stages.1", "encoder.stages.2", "encoder.stages.3"], 32),
    ("siglip", ["encoder.layers.0", "encoder.layers.1", "encoder.layers.2"], 32),
    ("dinov2", ["encoder.layer.0", "encoder.layer.1", "encoder.layer.2"], 32),
    ("dinov2-classifier", ["dinov2.encoder.layer.0", "dinov2.encoder.layer.1", "dinov2.encoder.layer.2"], 64),
])
def test_each_family_exports_with_its_blocks(kind, blocks, width, tmp_path):
    model, processor = _tiny(kind)
    folder = _save(_seeded(lambda: model), processor, tmp_path / kind, card=False)
    spec, _ = export_backbone(f"hf:{folder}", layers="all,last")
    names = [layer.name for layer in spec.layers]
    assert names == blocks + ["pre_logits"], names
    assert spec.layers[-1].dim == width
    if kind == "vit":
        logits, _ = export_backbone(f"hf:{folder}", layers="logits")
        assert logits.class_names == ("cat", "dog", "fox")
    if kind == "dinov2-classifier":  # its classifier reads the class token and the mean of the patch tokens
        both, _ = export_backbone(f"hf:{folder}", tmp_path / "m.onnx", layers="pre_logits,dinov2.layernorm:cls+mean")
        images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
        got = FeatureModel(tmp_path / "m.onnx", device="cpu").run(images)
        assert_close_to_scale(got["pre_logits"], got["dinov2.layernorm.cls+mean"], 1e-6, "classifier input")
    if kind == "siglip":
        named, _ = export_backbone(f"hf:{folder}", layers="pooler_output,image_embeds")
        assert [layer.dim for layer in named.layers] == [32, 32]
