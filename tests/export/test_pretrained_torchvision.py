"""Acceptance 1 and 5 of the pretrained-weights issue, torchvision: weights by name from
torch.hub's checkpoint cache, used offline without a network call; a missing one is one line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from export import export_backbone
from export.errors import UnknownBackboneError, WeightsDownloadError, WeightsNotCachedError
from featurestore import read_spec
from featurestore._atomic import file_sha256
from featurestore.cli import main
from featurestore.session import FeatureModel
from reference import assert_close_to_scale, reference_outputs


def _checkpoints() -> Path:
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _cached(model: torch.nn.Module, filename: str, seed: int) -> Path:
    """Give ``model`` seeded random weights (BatchNorm statistics too) and save them in the cache."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    path = _checkpoints() / filename
    torch.save(model.state_dict(), path)
    return path


def test_resnet50_v2_comes_from_torch_hub_cache_offline(tmp_path, capsys):
    torch.manual_seed(3)
    model = torchvision.models.resnet50()
    cached = _cached(model, "resnet50-11ad3fa6.pth", 3)
    out = tmp_path / "m.onnx"
    assert main(["export", "resnet50:IMAGENET1K_V2", "-o", str(out)]) == 0  # sockets blocked: cache only
    assert "torchvision:resnet50:IMAGENET1K_V2" in capsys.readouterr().out
    spec = read_spec(out)
    assert spec.weights.sha256 == file_sha256(cached) and not spec.weights.random_init
    assert (spec.weights.family, spec.weights.tag) == ("torchvision", "IMAGENET1K_V2")
    prep = spec.preprocessing
    assert (prep.resize_size, prep.crop_size, prep.interpolation) == (232, (224, 224), "bilinear")
    assert spec.class_names is None or len(spec.class_names) == 1000
    images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    got = FeatureModel(out, device="cpu").run(images)
    want = reference_outputs(model, spec, images)
    assert [layer.name for layer in spec.layers] == ["pre_logits"]
    for layer in spec.layers:
        assert_close_to_scale(got[layer.output], want[layer.output], 1e-4, layer.output)


def test_default_weights_and_other_enums_take_their_own_file(tmp_path):
    v1 = _cached(torchvision.models.resnet18(), "resnet18-f37072fd.pth", 1)
    spec, _ = export_backbone("resnet18", tmp_path / "a.onnx")
    assert spec.weights.sha256 == file_sha256(v1) and spec.weights.tag == "IMAGENET1K_V1"
    assert spec.preprocessing.resize_size == 256 and spec.weights.source == "torchvision:resnet18:IMAGENET1K_V1"
    spec_by_enum, _ = export_backbone("resnet18:IMAGENET1K_V1", tmp_path / "b.onnx")
    assert spec_by_enum.weights == spec.weights and spec_by_enum.backbone == "resnet18:IMAGENET1K_V1"


def test_new_weights_change_the_model_bytes(tmp_path):
    path = _cached(torchvision.models.resnet18(), "resnet18-f37072fd.pth", 1)
    first_spec, first = export_backbone("resnet18", tmp_path / "a.onnx")
    _cached(torchvision.models.resnet18(), "resnet18-f37072fd.pth", 2)
    second_spec, second = export_backbone("resnet18", tmp_path / "b.onnx")
    assert first != second and first_spec.weights.sha256 != second_spec.weights.sha256
    assert second_spec.weights.sha256 == file_sha256(path)


@pytest.mark.parametrize("how", ["flag", "FEATURESTORE_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_without_cached_weights_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, how):
    out = tmp_path / "m.onnx"
    args = ["export", "resnet18:IMAGENET1K_V1", "-o", str(out)]
    if how == "flag":
        args.append("--offline")
    else:
        monkeypatch.setenv(how, "1")
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    assert "\n" not in err
    for part in ("resnet18:IMAGENET1K_V1", "resnet18-f37072fd.pth", folder,
                 "featurestore fetch resnet18:IMAGENET1K_V1", "--weights PATH", "--random-init"):
        assert part in err, part
    assert not out.exists()
    with pytest.raises(WeightsNotCachedError) as info:
        export_backbone("resnet18", offline=True)
    assert isinstance(info.value, FileNotFoundError)


def test_online_download_failure_is_one_line(tmp_path):
    with pytest.raises(WeightsDownloadError) as info:  # the conftest blocks the connection
        export_backbone("resnet18", tmp_path / "m.onnx")
    assert "download.pytorch.org" in str(info.value) and "--random-init" in str(info.value)
    assert not (tmp_path / "m.onnx").exists()


def test_weights_file_and_random_init_keep_working(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "w.pth")
    spec, _ = export_backbone("resnet18", weights=tmp_path / "w.pth")
    assert spec.weights.source == "file:w.pth" and spec.weights.family is None
    spec, _ = export_backbone("resnet18:IMAGENET1K_V1", random_init=True)
    assert spec.weights.random_init
    assert '"family"' not in spec.to_json()  # specs without provenance keep their bytes


def test_unknown_enum_lists_close_names():
    with pytest.raises(UnknownBackboneError, match="IMAGENET1K_V2"):
        export_backbone("resnet50:IMAGENET1K_V3", offline=True)


def test_package_weights_stay_the_default_of_mobilenet_v2():
    spec, _ = export_backbone("mobilenet_v2", offline=True)
    assert spec.weights.source.startswith("offline:") and spec.preprocessing.resize_size == 256
    with pytest.raises(WeightsNotCachedError, match="mobilenet_v2-7ebf99e0.pth"):
        export_backbone("mobilenet_v2:IMAGENET1K_V2", offline=True)


def test_fetch_reports_cached_weights_and_fails_in_one_line_without_network(capsys, monkeypatch):
    cached = _cached(torchvision.models.resnet18(), "resnet18-f37072fd.pth", 1)
    assert main(["fetch", "resnet18", "--offline"]) == 0
    assert f"resnet18: {cached} (torchvision:resnet18:IMAGENET1K_V1, sha256 {file_sha256(cached)})" in \
        capsys.readouterr().out
    assert main(["fetch", "resnet18:IMAGENET1K_V1", "resnet50"]) == 1  # the conftest blocks the download
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "resnet50:IMAGENET1K_V2: cannot download" in err and "resnet18:" in captured.out
    monkeypatch.setenv("FEATURESTORE_OFFLINE", "1")
    assert main(["fetch", "timm:resnet18.a1_in1k"]) == 1
    assert "not in the Hugging Face cache" in capsys.readouterr().err
    assert not any((Path(torch.hub.get_dir()) / "checkpoints").glob("resnet50*"))


def test_densenet_weights_under_their_published_key_names_load(tmp_path):
    """As published: layer keys named ``norm.1``, and no ``num_batches_tracked`` (saved before torch 0.4.1)."""
    model = torchvision.models.densenet121()
    state = {key.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): value
             for key, value in model.state_dict().items() if not key.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in state
    path = _checkpoints() / "densenet121-a639ec97.pth"
    torch.save(state, path)
    spec, _ = export_backbone("densenet121", image_size=64)
    assert spec.weights.sha256 == file_sha256(path)


def test_pipeline_export_step_takes_offline(tmp_path, monkeypatch):
    """`offline = true` in an [[export]] step: a weights file that is not cached is one line saying
    so; without the key the step would try the library's download (refused here: no network)."""
    from featurestore.cli.pipeline import run_pipeline

    monkeypatch.delenv("FEATURESTORE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    toml = tmp_path / "p.toml"
    body = f'workdir = "{tmp_path / "work"}"\n\n[[export]]\nname = "m"\nbackbone = "resnet18"\n'
    toml.write_text(body + "offline = true\n")
    with pytest.raises(WeightsNotCachedError, match=r"resnet18.*not in torch.hub's cache.*featurestore fetch"):
        run_pipeline(toml)
    toml.write_text(body)
    with pytest.raises(WeightsDownloadError, match="cannot download"):
        run_pipeline(toml)
    assert not (tmp_path / "work" / "m.onnx").exists()
