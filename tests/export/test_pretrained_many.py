"""Acceptance 6 of the pretrained-weights issue: 35 pretrained names across the families (torchvision
weights enums, timm tags of seven families, Hugging Face transformers repos of five architectures,
OpenCLIP tags of four kinds of image tower), each with
weights made here and laid out in its library's cache as the library writes it, export by name
offline with no weights flag, and the spec records the family, the tag and the sha256 of the file
the cache holds. Small architectures keep it to about a minute and a half of CPU time."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from featurestore import read_spec
from featurestore._atomic import file_sha256
from featurestore.cli import main
from test_pretrained_hf import REVISION, _save, _tiny, _to_cache
from test_pretrained_open_clip import hf_repo_file, put_hf
from test_pretrained_timm import cache_tag

TORCHVISION = [
    "squeezenet1_0:IMAGENET1K_V1", "squeezenet1_1:IMAGENET1K_V1", "mobilenet_v2:IMAGENET1K_V2",
    "mobilenet_v3_small:IMAGENET1K_V1", "shufflenet_v2_x0_5:IMAGENET1K_V1", "mnasnet0_5:IMAGENET1K_V1",
    "mnasnet0_75:IMAGENET1K_V1", "regnet_x_400mf:IMAGENET1K_V1", "regnet_x_400mf:IMAGENET1K_V2",
    "resnet18:IMAGENET1K_V1",
]
TIMM = [
    "test_byobnet.r160_in1k", "test_convnext.r160_in1k", "test_convnext2.r160_in1k", "test_convnext3.r160_in1k",
    "test_efficientnet.r160_in1k", "test_efficientnet_evos.r160_in1k", "test_efficientnet_gn.r160_in1k",
    "test_efficientnet_ln.r160_in1k", "test_nfnet.r160_in1k", "test_resnet.r160_in1k", "test_vit.r160_in1k",
    "test_vit2.r160_in1k", "test_vit3.r160_in1k", "resnet10t.c3_in1k", "tinynet_e.in1k", "lcnet_050.ra2_in1k",
]
# FastViT, PE (a timm EVA with rotary embeddings), ViTamin (published as pytorch_model.bin), ModifiedResNet
OPEN_CLIP = ["MobileCLIP2-S0/dfndr2b", "PE-Core-T-16-384/meta", "ViTamin-S/datacomp1b", "RN50-quickgelu/yfcc15m"]
# transformers repos (tiny configs of each architecture, in the Hugging Face cache as huggingface_hub lays them out)
HF = ["vit", "convnext", "swin", "beit", "siglip"]
NAMES = (TORCHVISION + [f"timm:{t}" for t in TIMM] + [f"hf:tiny-org/{k}" for k in HF]
         + [f"open_clip:{t}" for t in OPEN_CLIP])


def _seeded(build, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def cache_torchvision(name: str, seed: int) -> Path:
    """Random weights of the enum's architecture at torch.hub's checkpoint path for its URL."""
    model_name, _, enum = name.partition(":")
    weights = torchvision.models.get_model_weights(model_name)[enum]
    kwargs = {"num_classes": len(weights.meta["categories"])}
    model = _seeded(lambda: torchvision.models.get_model(model_name, weights=None, **kwargs), seed)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / os.path.basename(urlparse(weights.url).path)
    torch.save(model.state_dict(), path)
    return path


def cache_open_clip_tag(arch: str, tag: str, seed: int, tmp: Path) -> Path:
    """Random weights of the architecture's image tower (built by open_clip as ``CLIP`` builds it;
    the text tower, which the export does not read, is left out to keep the file small) under
    open_clip's key names, as the tag's file in the Hugging Face cache: the safetensors file, or for
    a tag published as ``pytorch_model.bin`` that file (torch.save)."""
    from open_clip.model import _build_vision_tower

    cfg = open_clip.get_model_config(arch)
    tower = _seeded(lambda: _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], bool(cfg.get("quick_gelu"))), seed)
    repo, filename = os.path.split(open_clip.pretrained.get_pretrained_cfg(arch, tag)["hf_hub"])
    state = {f"visual.{k}": v.contiguous() for k, v in tower.state_dict().items()}
    if filename == "pytorch_model.bin":
        torch.save(state, tmp / filename)
    else:
        filename = hf_repo_file(arch, tag)[1]
        save_file(state, tmp / filename)
    path = put_hf(repo, filename, (tmp / filename).read_bytes())
    (tmp / filename).unlink()
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_pretrained_tag_exports_by_name_offline(name, tmp_path, monkeypatch):
    seed = NAMES.index(name)
    if name.startswith("timm:"):
        cached, family, tag = cache_tag(name[5:], seed), "timm", name.partition(".")[2]
    elif name.startswith("hf:"):
        repo = name[3:]
        model, processor = _tiny(repo.partition("/")[2])
        snapshot = _to_cache(_save(model, processor, tmp_path / "saved", card=False), repo)
        cached, family, tag = snapshot / "model.safetensors", "hf", f"{repo}@{REVISION}"
    elif name.startswith("open_clip:"):
        arch, _, tag = name[len("open_clip:"):].partition("/")
        cached, family = cache_open_clip_tag(arch, tag, seed, tmp_path), "open_clip"
    else:
        cached, family, tag = cache_torchvision(name, seed), "torchvision", name.partition(":")[2]
    monkeypatch.setenv("FEATURESTORE_OFFLINE", "1")
    out = tmp_path / "m.onnx"
    assert main(["export", name, "-o", str(out)]) == 0
    weights = read_spec(out).weights
    assert (weights.family, weights.tag, weights.random_init) == (family, tag, False)
    assert weights.sha256 == file_sha256(cached)


def test_the_tags_span_the_families():
    assert len(NAMES) >= 30 and len(set(NAMES)) == len(NAMES)
    assert min(len(TORCHVISION), len(TIMM), len(HF), len(OPEN_CLIP)) >= 4
