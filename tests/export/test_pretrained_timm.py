"""Acceptance 2 and 5 of the pretrained-weights issue, timm: tags load from a Hugging Face Hub
cache laid out as huggingface_hub writes it, through timm's own pretrained loader, offline."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from export import build_backbone, export_backbone, get_backbone
from export.errors import WeightsError, WeightsNotCachedError
from featurestore._atomic import file_sha256
from featurestore.cli import main
from featurestore.session import FeatureModel
from reference import assert_close_to_scale, reference_outputs

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _hf_cache() -> Path:
    return Path(os.environ["HF_HUB_CACHE"])


def _put(repo_folder: Path, filename: str, data: bytes) -> Path:
    """Store ``data`` as huggingface_hub does: a blob named by its hash, linked from the snapshot."""
    digest = hashlib.sha256(data).hexdigest()
    blob = repo_folder / "blobs" / digest
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = repo_folder / "snapshots" / REVISION / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


def cache_tag(name: str, seed: int, filename: str = "model.safetensors", state=None) -> Path:
    """Seeded random weights of ``name`` (``ARCH.TAG``) as its Hugging Face repo's ``filename``
    (``model.safetensors``, or ``pytorch_model.bin`` holding ``state`` when given) in the cache;
    returns the snapshot path."""
    from timm.models._hub import save_config_for_hf

    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False)
    folder = _hf_cache() / ("models--" + repo.replace("/", "--"))
    tmp = folder / "tmp"
    tmp.mkdir(parents=True)
    if filename == "model.safetensors":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / filename)
    else:
        torch.save(model.state_dict() if state is None else state, tmp / filename)
    save_config_for_hf(model, tmp / "config.json")
    path = _put(folder, filename, (tmp / filename).read_bytes())
    _put(folder, "config.json", (tmp / "config.json").read_bytes())
    for item in tmp.iterdir():
        item.unlink()
    tmp.rmdir()
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(REVISION)
    return path


def timm_offline_reference(name: str, monkeypatch, **kwargs) -> torch.nn.Module:
    """``timm.create_model(name, pretrained=True)`` offline on the test's cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(_hf_cache()))
    return timm.create_model(name, pretrained=True, **kwargs).eval()


@pytest.mark.parametrize("name, image_size", [
    ("convnext_tiny.fb_in22k", None),
    ("vit_small_patch14_dinov2.lvd142m", 56),
    ("vit_base_patch32_clip_224.openai", 64),
])
def test_timm_tag_from_hugging_face_cache_equals_timm_pretrained(name, image_size, tmp_path, monkeypatch):
    cached = cache_tag(name, seed=len(name))
    out = tmp_path / "m.onnx"
    args = ["export", f"timm:{name}", "-o", str(out)] + (["--image-size", str(image_size)] if image_size else [])
    assert main(args) == 0  # sockets are blocked: the cached file is used without a network call
    spec, _ = export_backbone(f"timm:{name}", image_size=image_size)
    assert spec.weights.sha256 == file_sha256(cached) and not spec.weights.random_init
    assert (spec.weights.family, spec.weights.tag, spec.weights.source) == ("timm", name.split(".")[1], f"timm:{name}")
    assert spec.weights.revision == REVISION  # the snapshot the cache holds
    assert spec.weights.license == timm.models.get_pretrained_cfg(name).license

    kwargs = {"img_size": image_size} if image_size else {}
    model = timm_offline_reference(name, monkeypatch, **kwargs)
    config = timm.data.resolve_data_config({}, model=timm.create_model(name, pretrained=False))
    native = get_backbone(f"timm:{name}").preprocessing
    size = config["input_size"][1]
    assert native.crop_size == tuple(config["input_size"][1:])
    assert native.resize_size == math.floor(size / config["crop_pct"])
    assert (native.interpolation, native.mean, native.std) == (config["interpolation"], config["mean"], config["std"])
    prep = spec.preprocessing
    if image_size is None:
        assert prep == native
    else:
        assert prep.crop_size == (image_size, image_size) and (prep.mean, prep.std) == (native.mean, native.std)

    images = np.random.default_rng(0).integers(0, 256, (2, *prep.crop_size, 3), dtype=np.uint8)
    got = FeatureModel(out, device="cpu").run(images)
    want = reference_outputs(model, spec, images)
    for layer in spec.layers:
        assert_close_to_scale(got[layer.output], want[layer.output], 1e-4, f"{name} {layer.output}")


def test_default_tag_and_hf_hub_names_use_the_same_cache(tmp_path):
    cached = cache_tag("resnet18.a1_in1k", seed=1)
    assert timm.models.get_pretrained_cfg("resnet18").tag == "a1_in1k"
    spec, _ = export_backbone("timm:resnet18", image_size=64)
    assert spec.weights.sha256 == file_sha256(cached) and spec.weights.source == "timm:resnet18.a1_in1k"
    hub, _ = export_backbone("timm:hf-hub:timm/resnet18.a1_in1k", image_size=64)
    assert hub.weights.sha256 == spec.weights.sha256 and hub.preprocessing == spec.preprocessing


def test_offline_without_cached_tag_is_one_line(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "timm:vit_small_patch14_dinov2.lvd142m", "--offline", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and not out.exists()
    for part in ("timm:vit_small_patch14_dinov2.lvd142m", "timm/vit_small_patch14_dinov2.lvd142m",
                 "model.safetensors", str(_hf_cache()), "featurestore fetch", "--random-init"):
        assert part in err, part
    with pytest.raises(WeightsNotCachedError):
        export_backbone("timm:hf-hub:timm/resnet18.a1_in1k", offline=True)


class Hostile:
    """Not a tensor: unpickling it would run code of the file's choosing."""


def test_pytorch_model_bin_loads_as_tensors_only(monkeypatch):
    cached = cache_tag("resnet18.a1_in1k", seed=2, filename="pytorch_model.bin")
    spec, _ = export_backbone("timm:resnet18.a1_in1k", image_size=64)
    assert spec.weights.sha256 == file_sha256(cached)
    model = timm_offline_reference("resnet18.a1_in1k", monkeypatch)
    built, _ = build_backbone("timm:resnet18.a1_in1k")
    for key, value in model.state_dict().items():
        assert torch.equal(value, built.state_dict()[key]), key


def test_a_pickled_object_in_the_cache_is_refused():
    cache_tag("resnet18.a1_in1k", seed=2, filename="pytorch_model.bin", state={"fc.weight": Hostile()})
    with pytest.raises(WeightsError, match="as a state_dict"):
        export_backbone("timm:resnet18.a1_in1k", image_size=64)
