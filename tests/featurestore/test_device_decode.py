"""Decoding on the inference device (``decode="device"``), run on the CPU: the same code path as on CUDA.

On the CPU TorchCodec decodes with libjpeg-turbo, as Pillow does, so pixels can be held
to the host's full-size decode within one grey level; on CUDA (nvJPEG) the GPU benchmark
measures the agreement instead.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torchcodec.decoders", reason="the device decoder needs TorchCodec (featurestore[gpu-decode])")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from featurestore import ExtractConfig, FeatureModel, decode_image, extract, open_store  # noqa: E402
from featurestore.cli import main  # noqa: E402
from featurestore.device_decode import DeviceDecoder  # noqa: E402
from featurestore.errors import FeatureStoreError, ModelInputError  # noqa: E402
from featurestore.manifest import MANIFEST_NAME  # noqa: E402
from featurestore.spec import Preprocessing  # noqa: E402
from images import smooth_rgb, write_bad_images, write_good_images, write_tricky_images  # noqa: E402

PREP = Preprocessing(crop_size=(224, 224), resize_size=256)


def _jpeg(size: tuple[int, int], seed: int = 0, mode: str = "RGB", orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(smooth_rgb(size, seed), mode="RGB").convert(mode).save(buf, "JPEG", quality=90,
                                                                          exif=exif.tobytes())
    return buf.getvalue()


def test_run_tensor_is_bit_equal_to_run(tiny_onnx):
    model = FeatureModel(tiny_onnx, device="cpu")
    images = np.random.default_rng(3).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    plain, bound = model.run(images), model.run_tensor(torch.from_numpy(images))
    assert plain.keys() == bound.keys()
    for name in plain:
        np.testing.assert_array_equal(plain[name], bound[name])


@pytest.mark.parametrize("bad, match", [
    (torch.zeros((2, 32, 32, 3), dtype=torch.float32), "uint8 tensor"),
    (torch.zeros((2, 3, 32, 32), dtype=torch.uint8), r"shape \(batch, 32, 32, 3\)"),
    (torch.zeros((2, 32, 64, 3), dtype=torch.uint8)[:, :, ::2], "contiguous"),
    (np.zeros((2, 32, 32, 3), dtype=np.uint8), "uint8 tensor"),
])
def test_run_tensor_refuses_what_it_cannot_bind(tiny_onnx, bad, match):
    with pytest.raises(ModelInputError, match=match):
        FeatureModel(tiny_onnx, device="cpu").run_tensor(bad)


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (1600, 1200), (224, 224), (120, 90)])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpeg_pixels_match_the_host_decode(size, mode):
    """Same resize rule, rounding and centre crop as the host: within one grey level of Pillow's full decode."""
    data = _jpeg(size, seed=sum(size), mode=mode)
    prep = PREP if mode == "RGB" else Preprocessing(crop_size=(224, 224), resize_size=256, mean=(0.5,),
                                                    std=(0.5,), color_mode="L")
    (image,), (error,) = DeviceDecoder(prep, "cpu").decode([data])
    assert error is None and image.dtype == torch.uint8 and image.device.type == "cpu"
    host = decode_image(data, prep, draft=False)
    device = image.numpy()
    assert device.shape == host.shape == (224, 224, prep.channels)
    assert np.abs(device.astype(int) - host.astype(int)).max() <= 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_as_the_host_does(orientation):
    data = _jpeg((300, 240), seed=orientation, orientation=orientation)
    prep = Preprocessing(crop_size=(96, 64), resize_size=None, resize_mode="exact")  # keeps the whole frame
    (image,), (error,) = DeviceDecoder(prep, "cpu").decode([data])
    assert error is None
    host = decode_image(data, prep, draft=False)
    assert np.abs(image.numpy().astype(int) - host.astype(int)).max() <= 1


def test_non_jpegs_and_bad_files_take_the_host_path_with_the_same_results(tmp_path):
    tricky = write_tricky_images(tmp_path / "tricky")
    bad = write_bad_images(tmp_path / "bad")
    paths = list(tricky.values()) + list(bad.values())
    images, errors = DeviceDecoder(PREP, "cpu").decode([p.read_bytes() for p in paths])
    for path, image, error in zip(paths, images, errors):
        try:
            host, host_cause = decode_image(path.read_bytes(), PREP, draft=False), None
        except FeatureStoreError as exc:
            host, host_cause = None, exc.cause
        assert (error.cause if error else None) == host_cause, path.name
        assert (image is None) == (host is None), path.name
        if host is not None:
            assert np.abs(image.numpy().astype(int) - host.astype(int)).max() <= 1, path.name


def test_arrays_are_decoded_on_the_host_and_uploaded():
    array = smooth_rgb((80, 60), 4)
    (image,), (error,) = DeviceDecoder(PREP, "cpu").decode([array])
    assert error is None
    np.testing.assert_array_equal(image.numpy(), decode_image(_png(array), PREP))


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def test_extract_on_device_matches_the_host_row_for_row(tiny_onnx, tmp_path):
    folder = tmp_path / "mixed"
    write_good_images(folder, n=7, size=(90, 70))
    write_tricky_images(folder)
    write_bad_images(folder)
    reports = {}
    for decode in ("host", "device"):
        options = ExtractConfig(batch_size=4, shard_rows=5, device="cpu", progress=False, decode=decode)
        reports[decode] = extract(tiny_onnx, folder, tmp_path / decode, options)
    host, device = open_store(tmp_path / "host"), open_store(tmp_path / "device")
    assert device.keys.tolist() == host.keys.tolist() and device.paths.tolist() == host.paths.tolist()
    assert [(Path(f["path"]).name, f["error"]) for f in reports["device"].failures] == \
        [(Path(f["path"]).name, f["error"]) for f in reports["host"].failures]
    assert len(reports["device"].failures) == 4 and reports["device"].decoded == reports["host"].decoded
    a, b = host.load().matrix(), device.load().matrix()
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.999
    runs = json.loads((tmp_path / "device" / MANIFEST_NAME).read_text())["runs"]
    assert runs[-1]["decode"] == "device"
    assert runs[-1]["device_decode_host_fallbacks"] == 1  # the truncated JPEG: refused on the device and the host

    # Incremental: new content only, decoded on the device, appended after the old rows.
    shutil.copy(folder / "good_000.jpg", folder / "copy_of_good.jpg")
    (folder / "new.jpg").write_bytes(_jpeg((70, 90), seed=99))
    again = extract(tiny_onnx, folder, tmp_path / "device",
                    ExtractConfig(batch_size=4, device="cpu", progress=False, decode="device"))
    assert again.decoded == 1 and open_store(tmp_path / "device").keys.tolist()[:-1] == host.keys.tolist()


def test_device_decode_options_are_checked():
    with pytest.raises(FeatureStoreError, match="views"):
        ExtractConfig(decode="device", views=2)
    with pytest.raises(FeatureStoreError, match="host, device"):
        ExtractConfig(decode="gpu")


def test_cli_decode_flag(tiny_onnx, tmp_path, capsys):
    folder = tmp_path / "imgs"
    write_good_images(folder, n=3)
    assert main(["extract", str(tiny_onnx), str(folder), "-o", str(tmp_path / "s"), "--device", "cpu",
                 "--decode", "device", "--no-progress"]) == 0
    assert "3 decoded" in capsys.readouterr().out
    assert main(["extract", str(tiny_onnx), str(folder), "-o", str(tmp_path / "r"), "--engine", "ray",
                 "--decode", "device"]) != 0
    assert "--decode device" in capsys.readouterr().err


def test_pipeline_extract_step_takes_decode(tiny_onnx, tmp_path):
    from featurestore.cli.pipeline import run_pipeline

    folder = tmp_path / "imgs"
    write_good_images(folder, n=4)
    toml = tmp_path / "p.toml"
    toml.write_text(f'[[extract]]\nname = "s"\nmodel = "{tiny_onnx}"\nsources = ["{folder}"]\n'
                    f'device = "cpu"\ndecode = "device"\n')
    (outcome,) = run_pipeline(toml, workdir=tmp_path / "work")
    assert outcome.status == "ran" and "4 decoded" in outcome.detail
    runs = json.loads((tmp_path / "work" / "s" / MANIFEST_NAME).read_text())["runs"]
    assert runs[-1]["decode"] == "device"


def test_missing_torchcodec_is_a_clear_error(tiny_onnx, tmp_path, monkeypatch):
    write_good_images(tmp_path / "imgs", n=2)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # as if not installed
    with pytest.raises(FeatureStoreError, match=r"featurestore\[gpu-decode\]"):
        extract(tiny_onnx, tmp_path / "imgs", tmp_path / "store", ExtractConfig(device="cpu", decode="device"))
    assert not (tmp_path / "store").exists()


def test_run_tensor_refuses_a_batch_on_another_device(tiny_onnx):
    elsewhere = torch.empty((2, 32, 32, 3), dtype=torch.uint8, device="meta")
    with pytest.raises(ModelInputError, match="lies on meta"):
        FeatureModel(tiny_onnx, device="cpu").run_tensor(elsewhere)


def test_a_device_that_cannot_decode_fails_at_once():
    with pytest.raises(FeatureStoreError, match="cannot decode JPEGs on meta"):
        DeviceDecoder(PREP, "meta")


def test_large_batches_are_decoded_in_groups_with_the_same_pixels(monkeypatch):
    from featurestore import device_decode

    blobs = [_jpeg((120 + 8 * i, 90), seed=i) for i in range(7)]
    whole, _ = DeviceDecoder(PREP, "cpu").decode(blobs)
    monkeypatch.setattr(device_decode, "GROUP_IMAGES", 2)
    monkeypatch.setattr(device_decode, "GROUP_PIXELS", 3 * 130 * 90)
    calls = []
    decoder = DeviceDecoder(PREP, "cpu")
    original = decoder._decode_jpegs
    monkeypatch.setattr(decoder, "_decode_jpegs", lambda group: calls.append(len(group)) or original(group))
    grouped, errors = decoder.decode(blobs)
    assert sum(calls) == 7 and max(calls) <= 2 and errors == [None] * 7
    for a, b in zip(whole, grouped):
        assert torch.equal(a, b)
    assert decoder.host_fallbacks == 0


@pytest.mark.parametrize("rule", ["floor", "round"])
def test_device_crop_follows_the_crop_offset_as_the_host_does(rule):
    """A 20x31 image at its resize target (no resampling), cropped to 16x16: margins 4 and 15 (3 mod 4),
    so ``floor`` starts the crop at column 7 and ``round`` at column 8, on the device as on the host."""
    prep = Preprocessing(crop_size=(16, 16), resize_size=20, crop_offset=rule)
    image = np.zeros((20, 31, 3), np.uint8)
    image[..., 0] = np.arange(31, dtype=np.uint8)[None, :]
    image[..., 1] = np.arange(20, dtype=np.uint8)[:, None]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    device = DeviceDecoder(prep, "cpu")._crop(torch.from_numpy(image).permute(2, 0, 1)).numpy()
    host = decode_image(buf.getvalue(), prep, draft=False)
    np.testing.assert_array_equal(device, host)
    assert (int(device[0, 0, 0]), int(device[0, 0, 1])) == (7 if rule == "floor" else 8, 2)
