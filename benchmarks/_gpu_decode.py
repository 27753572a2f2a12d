"""The decode half of ``benchmarks.gpu``: can the host feed the GPU, and does decoding on the device help?

Three measurements on JPEG photos (scikit-image's, written once into the cache):

- **host decode**: :func:`featurestore.decode_image` on one thread and on every core;
- **device decode**: :class:`featurestore.device_decode.DeviceDecoder` (TorchCodec's
  ``decode_jpeg``, nvJPEG on CUDA), a batch per call, resized, cropped and stacked on the
  device, with its pixel difference from the host decode;
- **extract end to end**: ``featurestore.extract`` of a folder of 500x375 and 1600x1200 JPEGs
  into a fresh store, ``decode="host"`` vs ``decode="device"``, interleaved, with the cosine of
  the two stores' features row by row.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ._common import Variant, measure, speed_ratio

__all__ = ["decode_rates", "device_decode", "extract_decode_rates", "photo_blobs"]

E2E_SIZES = [(500, 375), (1600, 1200)]


def photo_blobs(cache_dir: Path, count: int, seed: int) -> tuple[list[bytes] | None, str]:
    """``count`` JPEG files (500x375) of scikit-image's photos, as bytes; None and why without them."""
    try:
        from ._images import jpeg_folder

        folder, _ = jpeg_folder(cache_dir, count, [(500, 375)], seed)
    except Exception as exc:
        return None, f"no photos ({type(exc).__name__}: {exc})"
    return [path.read_bytes() for path in sorted(folder.glob("*.jpg"))[:count]], "scikit-image photos, 500x375 JPEG"


def decode_rates(blobs: list[bytes], prep, cores: int, repeats: int) -> dict[str, Any]:
    """Images/s of the host's ``decode_image`` on one thread and on ``cores`` threads."""
    from featurestore import decode_image

    def serial(_) -> None:
        for blob in blobs:
            decode_image(blob, prep)

    def threaded(_) -> None:
        with ThreadPoolExecutor(cores) as pool:
            list(pool.map(lambda blob: decode_image(blob, prep), blobs))

    stats = measure([Variant("decode 1 thread", serial, len(blobs), "img"),
                     Variant(f"decode {cores} threads", threaded, len(blobs), "img")], repeats, warmup=True)
    return {"images": len(blobs), "threads": cores, "variants": stats,
            "per_thread": stats["decode 1 thread"]["rate"], "all_cores": stats[f"decode {cores} threads"]["rate"]}


def device_decode(blobs: list[bytes], prep, device: str, batch: int, repeats: int) -> dict[str, Any]:
    """Images/s of the device decoder on ``blobs`` (``batch`` per call) and its pixels against the host's."""
    from featurestore import decode_image
    from featurestore.device_decode import DeviceDecoder

    decoder = DeviceDecoder(prep, device)
    chunks = [blobs[i:i + batch] for i in range(0, len(blobs), batch)]

    def run(_) -> None:
        for chunk in chunks:
            images, errors = decoder.decode(chunk)
            if any(errors):
                raise RuntimeError(f"device decode failed: {next(e for e in errors if e)}")
            decoder.stack(images)

    stats = measure([Variant("device decode", run, len(blobs), "img")], repeats, warmup=True)
    images, _ = decoder.decode(blobs)
    diffs = {}
    for draft, name in ((True, "host (draft, the default)"), (False, "host full-size decode")):
        delta = np.stack([np.abs(image.cpu().numpy().astype(np.int16) - decode_image(blob, prep, draft=draft))
                          for image, blob in zip(images, blobs)])
        diffs[name] = {"mean_abs": float(delta.mean()), "p99_abs": float(np.percentile(delta, 99)),
                       "max_abs": int(delta.max())}
    return {"device": device, "images": len(blobs), "batch": batch, "variants": stats,
            "rate": stats["device decode"]["rate"], "pixel_difference": diffs}


def extract_decode_rates(model: Path, cache_dir: Path, workdir: Path, *, images: int, batch: int, device: str,
                         repeats: int, seed: int) -> dict[str, Any]:
    """``extract`` of a JPEG folder, host decode vs device decode, and how their features agree.

    Both variants share one session, made once: only the decoding differs between them.
    """
    from featurestore import ExtractConfig, FeatureModel, extract, open_store

    from ._images import jpeg_folder

    folder, info = jpeg_folder(cache_dir, images, E2E_SIZES, seed)
    session = FeatureModel(model, device=device)
    counter = iter(range(10**9))
    kept: dict[str, Path] = {}  # the first store of each variant, for the feature comparison

    def fresh() -> Path:
        return workdir / f"store-{next(counter)}"

    def variant(decode: str) -> Variant:
        name, options = f"extract decode={decode}", ExtractConfig(batch_size=batch, device=device, progress=False,
                                                                   decode=decode)

        def run(store: Path) -> None:
            report = extract(session, folder, store, options)
            if report.failures or report.decoded != images:
                raise RuntimeError(f"extract decode={decode}: {report.summary()}")

        def keep_first(store: Path) -> None:
            if kept.setdefault(name, store) != store:
                shutil.rmtree(store, ignore_errors=True)

        return Variant(name, run, images, "img", fresh, keep_first)

    stats = measure([variant("host"), variant("device")], repeats, warmup=True)
    a, b = (open_store(kept[f"extract decode={decode}"]).load().matrix() for decode in ("host", "device"))
    shutil.rmtree(workdir, ignore_errors=True)
    cosine = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"model": model.name, "images": images, "sizes": info["sizes"], "mean_kib": info.get("mean_kib"),
            "batch": batch, "device": device, "variants": stats,
            "ratio": speed_ratio(stats, "extract decode=device", "extract decode=host"),
            "feature_cosine": {"min": float(cosine.min()), "mean": float(cosine.mean())}}
