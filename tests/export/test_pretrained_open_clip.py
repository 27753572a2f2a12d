"""Acceptance 4 and 5 of the pretrained-weights issue, OpenCLIP: a tag's image tower loads from a
Hugging Face Hub cache laid out as huggingface_hub writes it, offline, and equals open_clip."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from export import build_backbone, export_backbone, get_backbone, list_backbones
from export.errors import UnknownBackboneError, WeightsError, WeightsNotCachedError
from featurestore import read_spec
from featurestore._atomic import file_sha256
from featurestore.decode import decode_image
from export.errors import MissingExtraError
from featurestore.cli import main
from featurestore.session import FeatureModel
from reference import assert_close_to_scale, normalise
from test_real_weights import CHINA, COFFEE

REVISION = "89abcdef0123456789abcdef0123456789abcdef"
ARCH, TAG = "ViT-B-32", "laion2b_s34b_b79k"
NAME = f"open_clip:{ARCH}/{TAG}"
REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


def _hf_cache() -> Path:
    return Path(os.environ["HF_HUB_CACHE"])


def put_hf(repo: str, filename: str, data: bytes, revision: str = REVISION) -> Path:
    """Store ``data`` as huggingface_hub does: ``models--ORG--NAME/blobs/SHA256``, linked from
    ``snapshots/REV/FILE``, with ``refs/main`` naming the revision; returns the snapshot path."""
    folder = _hf_cache() / ("models--" + repo.replace("/", "--"))
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = folder / "snapshots" / revision / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    return link


def hf_repo_file(arch: str, tag: str) -> tuple[str, str]:
    """(repo, file) open_clip's ``download_pretrained`` fetches first for the tag (the safetensors alternative)."""
    repo, filename = os.path.split(open_clip.pretrained.get_pretrained_cfg(arch, tag)["hf_hub"])
    filename = filename or open_clip.constants.HF_WEIGHTS_NAME
    if filename == open_clip.constants.HF_WEIGHTS_NAME:
        return repo, open_clip.constants.HF_SAFE_WEIGHTS_NAME
    return repo, filename[:-4] + ".safetensors"


def cache_open_clip(arch: str, tag: str, seed: int, tmp: Path) -> tuple[Path, torch.nn.Module]:
    """A full open_clip model (both towers) with seeded random weights, saved as the tag's
    safetensors file in the Hugging Face cache; returns (snapshot path, model)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(arch).eval()
    repo, filename = hf_repo_file(arch, tag)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / filename)
    path = put_hf(repo, filename, (tmp / filename).read_bytes())
    (tmp / filename).unlink()
    return path, model


def open_clip_offline_reference(arch: str, tag: str, monkeypatch) -> torch.nn.Module:
    """``open_clip.create_model(arch, pretrained=tag)`` offline on the test's cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(_hf_cache()))
    return open_clip.create_model(arch, pretrained=tag).eval()


@pytest.mark.slow  # a ViT-B-32 CLIP checkpoint (151M parameters) written, exported and read back: ~1-2 minutes here
def test_image_tower_from_hugging_face_cache_equals_encode_image(tmp_path, monkeypatch, capsys):
    cached, _ = cache_open_clip(ARCH, TAG, seed=5, tmp=tmp_path)
    out = tmp_path / "m.onnx"
    layers = "last,pre_projection,visual.transformer.resblocks.5:mean,visual.transformer.resblocks.11:cls"
    assert main(["export", NAME, "--layers", layers, "-o", str(out)]) == 0  # sockets blocked: cache only
    spec = read_spec(out)
    weights = spec.weights
    assert (weights.family, weights.tag, weights.source) == ("open_clip", TAG, NAME)
    assert weights.sha256 == file_sha256(cached) and weights.revision == REVISION and not weights.random_init
    assert [layer.name for layer in spec.layers] == ["pre_logits", "pre_projection", "visual.transformer.resblocks.5",
                                                     "visual.transformer.resblocks.11"]
    prep = spec.preprocessing
    assert (prep.crop_size, prep.resize_size, prep.resize_mode, prep.interpolation) == \
        ((224, 224), 224, "shorter_side", "bicubic")

    model = open_clip_offline_reference(ARCH, TAG, monkeypatch)
    photos = [decode_image(photo, prep) for photo in (CHINA, COFFEE)]
    images = np.stack(photos + [np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)])
    got = FeatureModel(out, device="cpu").run(images)
    x = normalise(images, prep)
    blocks: dict[int, torch.Tensor] = {}
    handles = [model.visual.transformer.resblocks[i].register_forward_hook(
        lambda m, a, o, i=i: blocks.__setitem__(i, o)) for i in (5, 11)]
    with torch.no_grad():
        embedding = model.encode_image(x)
        for handle in handles:
            handle.remove()
        projection, model.visual.proj = model.visual.proj, None
        pre_projection = model.visual(x)
        model.visual.proj = projection
    assert torch.allclose(pre_projection @ projection, embedding, atol=1e-5)
    want = {"pre_logits": embedding, "pre_projection": pre_projection,
            "visual.transformer.resblocks.5.mean": blocks[5][:, 1:].mean(1),
            "visual.transformer.resblocks.11.cls": blocks[11][:, 0]}
    for layer in spec.layers:
        assert_close_to_scale(got[layer.output], want[layer.output].numpy(), 1e-4, layer.output)

    # the same checkpoint passed as --weights: the text tower's keys are dropped, the image tower loads strictly
    by_file, info = build_backbone(NAME, weights=cached)
    pretrained, _ = build_backbone(NAME)
    assert info.sha256 == weights.sha256 and info.family is None
    for key, value in pretrained.state_dict().items():
        assert torch.equal(value, by_file.state_dict()[key]), key

    # fetch offline finds the same file
    assert main(["fetch", NAME, "--offline"]) == 0
    assert f"{NAME}: {cached} ({NAME}, sha256 {weights.sha256})" in capsys.readouterr().out


@pytest.mark.slow  # a PE-Core-T CLIP checkpoint (70M parameters) written, exported and read back
def test_timm_tower_at_another_image_size_equals_open_clip(tmp_path, monkeypatch):
    """PE-Core-T: a timm EVA trunk whose own classifier is the projection, squash-resized, exported
    at 128 instead of 384 (set_input_size after loading, as open_clip's force_image_size does)."""
    arch, tag = "PE-Core-T-16-384", "meta"
    cached, _ = cache_open_clip(arch, tag, seed=7, tmp=tmp_path)
    spec, data = export_backbone(f"open_clip:{arch}/{tag}", tmp_path / "m.onnx", layers="last,pre_projection",
                                 image_size=128)
    prep = spec.preprocessing
    assert (prep.crop_size, prep.resize_mode, prep.resize_size, prep.interpolation) == \
        ((128, 128), "exact", None, "bilinear")
    assert spec.weights.sha256 == file_sha256(cached) and spec.weights.tag == tag
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(_hf_cache()))
    model = open_clip.create_model(arch, pretrained=tag, force_image_size=128).eval()
    images = np.random.default_rng(1).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    got = FeatureModel(tmp_path / "m.onnx", device="cpu").run(images)
    trunk = model.visual.trunk
    with torch.no_grad():
        x = normalise(images, prep)
        want = {"pre_logits": model.encode_image(x),
                "pre_projection": trunk.forward_head(trunk.forward_features(x), pre_logits=True)}
    for layer in spec.layers:
        assert_close_to_scale(got[layer.output], want[layer.output].numpy(), 1e-4, layer.output)


@pytest.mark.parametrize("arch, tag, mode", [
    ("ViT-B-32", "laion2b_s34b_b79k", "shorter_side"),  # shortest, bicubic, OpenAI mean/std
    ("ViT-B-16-SigLIP", "webli", "exact"),              # squash, bicubic, Inception mean/std
    ("ViT-L-14-CLIPA", "datacomp1b", "exact"),          # squash, bilinear, ImageNet mean/std
    ("MobileCLIP2-S0", "dfndr2b", "shorter_side"),      # shortest, bilinear, at 256
])
def test_preprocessing_equals_open_clip_transform_on_real_photos(arch, tag, mode):
    """Both resize the decoded photo with Pillow's filter of the same name to the same size and crop
    it at the same offsets, so the crops agree exactly; only the float arithmetic of the
    normalisation (graph vs. torchvision's ``Normalize``) differs, by float32 rounding."""
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    prep = get_backbone(f"open_clip:{arch}/{tag}").preprocessing
    assert prep.resize_mode == mode
    cfg = merge_preprocess_dict(PreprocessCfg(), open_clip.pretrained.get_pretrained_cfg(arch, tag))
    cfg["size"] = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]  # as create_model sets it
    transform = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    for photo in (CHINA, COFFEE):
        want = transform(Image.open(photo))
        got = normalise(decode_image(photo, prep)[None], prep)[0]
        assert got.shape == want.shape
        assert float((got - want).abs().max()) < 1e-5, photo


def test_default_tag_is_the_first_listed_and_unknown_tags_list_the_known(tmp_path):
    assert get_backbone(f"open_clip:{ARCH}").preprocessing == get_backbone(f"open_clip:{ARCH}/openai").preprocessing
    assert open_clip.list_pretrained_tags_by_model(ARCH)[0] == "openai"
    with pytest.raises(WeightsNotCachedError, match=f"open_clip:{ARCH}/openai"):
        export_backbone(f"open_clip:{ARCH}", offline=True)
    with pytest.raises(UnknownBackboneError, match="laion2b_s34b_b79k"):
        get_backbone(f"open_clip:{ARCH}/laion2b")
    with pytest.raises(UnknownBackboneError, match="ViT-B-32"):
        get_backbone("open_clip:ViT-B-33")
    assert NAME in list_backbones("open_clip:vit-b-32/")


def test_layers_lists_blocks_pre_projection_and_last(capsys):
    assert main(["layers", NAME]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "block" in rows["visual.transformer.resblocks.11"] and "NLC+1" in rows["visual.transformer.resblocks.11"]
    assert rows["pre_projection"].split()[1] == "768" and rows["pre_logits"].split()[1] == "512"
    assert "last" in rows["pre_logits"]


def test_tags_trained_with_quick_gelu_run_with_it():
    from open_clip.model import QuickGELU

    from export._open_clip import open_clip_build

    def activations(tag):
        return {type(m) for m in open_clip_build(ARCH, tag).modules() if isinstance(m, (QuickGELU, torch.nn.GELU))}

    assert activations("openai") == {QuickGELU}  # as open_clip's force_quick_gelu=True builds it
    assert activations(TAG) == {torch.nn.GELU}


@pytest.mark.parametrize("how", ["flag", "FEATURESTORE_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_without_cached_weights_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, how):
    out = tmp_path / "m.onnx"
    args = ["export", NAME, "-o", str(out)]
    if how == "flag":
        args.append("--offline")
    else:
        monkeypatch.setenv(how, "1")
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and not out.exists()
    for part in (NAME, REPO, "open_clip_model.safetensors", str(_hf_cache()), f"featurestore fetch {NAME}",
                 "--random-init"):
        assert part in err, part
    assert not list(tmp_path.iterdir())


def test_online_download_failure_is_one_line(tmp_path, capsys):
    assert main(["fetch", NAME]) == 1  # sockets are blocked
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{NAME}: cannot download open_clip_model.safetensors of Hugging Face repo {REPO}" in err
    assert not (_hf_cache() / ("models--" + REPO.replace("/", "--")) / "snapshots").exists()


class Hostile:
    """Not a tensor: unpickling it would run code of the file's choosing."""


def test_a_pickled_object_in_the_cache_is_refused(tmp_path):
    torch.save({"visual.proj": Hostile()}, tmp_path / "open_clip_pytorch_model.bin")
    put_hf(REPO, "open_clip_pytorch_model.bin", (tmp_path / "open_clip_pytorch_model.bin").read_bytes())
    with pytest.raises(WeightsError, match="as a state_dict"):
        export_backbone(NAME)


def test_missing_open_clip_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # `import open_clip` raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'featurestore\[clip\]'"):
        get_backbone(NAME)
    assert main(["export", NAME, "-o", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'featurestore[clip]'" in err
    assert "resnet50" in list_backbones("resnet50")
