"""`featurestore layers --list --cached`: the names whose pretrained weights the caches hold,
read from torch.hub's checkpoint folder and a Hugging Face Hub cache laid out as the libraries
write them; each of them is what `featurestore fetch --offline` finds."""

from __future__ import annotations

from pathlib import Path

import torch

from export import fetch_weights, list_cached
from featurestore.cli import main
from test_pretrained_open_clip import put_hf

REGISTERED = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"]


def test_empty_caches_list_the_package_weights_only(capsys):
    assert list_cached() == REGISTERED
    assert main(["layers", "--list", "--cached", "timm:"]) == 0
    assert capsys.readouterr().out == ""


def test_cached_files_are_listed_by_the_names_that_export_them(capsys):
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "resnet18-f37072fd.pth").write_bytes(b"weights")   # resnet18:IMAGENET1K_V1
    (checkpoints / "unrelated.pth").write_bytes(b"weights")
    put_hf("timm/resnet18.a1_in1k", "model.safetensors", b"weights")
    put_hf("timm/convnext_tiny.fb_in22k", "config.json", b"{}")      # a repo without its weights file
    put_hf("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_model.safetensors", b"weights")
    # one repo serves a tag under two architectures (GELU and QuickGELU)
    put_hf("timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors", b"weights")

    cached = list_cached()
    expected = sorted(REGISTERED + ["resnet18:IMAGENET1K_V1", "timm:resnet18.a1_in1k",
                                    "open_clip:ViT-B-32/laion2b_s34b_b79k", "open_clip:ViT-B-32/openai",
                                    "open_clip:ViT-B-32-quickgelu/openai"])
    assert cached == expected
    for name in cached:
        path, _ = fetch_weights(name, offline=True)
        assert Path(path).is_file(), name

    assert main(["layers", "--list", "--cached", "open_clip:*openai"]) == 0
    assert capsys.readouterr().out.split() == ["open_clip:ViT-B-32-quickgelu/openai", "open_clip:ViT-B-32/openai"]
