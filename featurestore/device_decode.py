"""Decode JPEGs on the inference device (nvJPEG on CUDA) and hand the batch to onnxruntime there.

At GPU inference rates the host's JPEG decoding becomes the bottleneck: one host core
decodes a few hundred photos a second, a GPU runs ResNet-50 at thousands. With
``ExtractConfig(decode="device")`` (``featurestore extract --decode device``) each batch of
JPEG bytes is decoded by TorchCodec's ``decode_jpeg`` on the session's device (nvJPEG on
CUDA, one batched call; it applies the EXIF orientation as Pillow does), resized and centre-cropped there by
``torchvision.transforms.v2.functional``, and bound to the onnxruntime session where it
lies (:meth:`FeatureModel.run_tensor`): the only host-to-device traffic is the compressed
file. TorchCodec is PyTorch's image decoder (torchvision's own decoders are deprecated
since torchvision 0.29); its Linux wheels on PyPI carry nvJPEG for CUDA 13
(``pip install 'featurestore[gpu-decode]'``).

This module is optional and the only one that imports torch (on first use, never at
import time): the rest of featurestore reads stores and runs ONNX files without it.

Differences from the host path (:func:`~featurestore.decode.decode_image`), by design:

- Pixels are close to, not always equal to, Pillow's: on CUDA another JPEG decoder
  (nvJPEG), and never the DCT-domain downscaling the host applies to large photos;
  torchvision's antialiased resize stands in for Pillow's. On the CPU (libjpeg-turbo on
  both sides) pixels differ by at most one grey level from the host's full-size decode;
  ``benchmarks/gpu.py`` measures the CUDA path's feature agreement. Keep one decode path
  per store where bit-reproducibility across runs matters.
- What is not a baseline/progressive JPEG in RGB or greyscale (PNG, CMYK JPEGs, in-memory
  arrays, files nvJPEG refuses) goes through the host path, one image at a time, and
  is uploaded; failures are recorded exactly as on the host. Refusals of files meant for
  the device are counted (:attr:`DeviceDecoder.host_fallbacks`); a decoder that cannot
  work at all fails when it is made (one small JPEG is decoded then).
- JPEGs are decoded in groups (:data:`GROUP_IMAGES`, :data:`GROUP_PIXELS`), each resized
  and cropped before the next is decoded, so full-size pixels of a whole batch never sit
  on the device at once.
- On the CPU the path works (it is how CI tests it); measured on 2 cores it beat the host
  path on 500x375 photos (544 vs 413 img/s) and lost on 1600x1200 ones (82 vs 215 img/s:
  the host decodes large JPEGs at reduced size in the DCT domain). It is meant for CUDA.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from .decode import _TRANSPOSING_ORIENTATIONS, MAX_PIXELS, _check_size, _target_size, decode_or_error
from .errors import BackendUnavailableError, ImageDecodeError
from .spec import Preprocessing

__all__ = ["DECODERS", "DeviceDecoder", "device_decode_available"]

#: Where extraction decodes images: ``host`` (Pillow on a thread pool) or ``device``.
DECODERS = ("host", "device")

_JPEG_MAGIC = b"\xff\xd8\xff"
#: Most images, and most pixels, decoded at full size in one device call: each group is
#: resized and cropped before the next is decoded, which bounds the device memory peak
#: (128 megapixels are ~384 MB of RGB; a batch of 256 12-megapixel photos would be 9 GB).
GROUP_IMAGES, GROUP_PIXELS = 32, 128_000_000


def device_decode_available() -> bool:
    """Whether torch, torchvision and torchcodec import here (the device decoder needs all three)."""
    try:
        import torch  # noqa: F401
        import torchcodec.decoders  # noqa: F401
        import torchvision.transforms.v2.functional  # noqa: F401
    except ImportError:
        return False
    return True


class DeviceDecoder:
    """Turns image bytes into uint8 ``(H, W, C)`` tensors on ``device``, as the graph takes them.

    Parameters
    ----------
    preprocessing : Preprocessing
        The model's preprocessing (resize rule, crop, interpolation, colour mode).
    device : str, default='cuda'
        A torch device: ``'cuda'``, ``'cuda:1'`` or ``'cpu'``.
    max_pixels : int, default=MAX_PIXELS
        Refuse images whose header declares more pixels, before decoding (as the host does).

    Raises
    ------
    FeatureStoreError
        torch, torchvision or torchcodec is missing.

    Examples
    --------
    >>> decoder = DeviceDecoder(model.spec.preprocessing, "cuda")  # doctest: +SKIP
    >>> images, errors = decoder.decode([path.read_bytes() for path in paths])  # doctest: +SKIP
    >>> features = model.run_tensor(decoder.stack([im for im in images if im is not None]))  # doctest: +SKIP
    """

    def __init__(self, preprocessing: Preprocessing, device: str = "cuda", *, max_pixels: int = MAX_PIXELS) -> None:
        if not device_decode_available():
            raise BackendUnavailableError("decode='device' needs torch, torchvision and torchcodec: "
                                    "pip install 'featurestore[gpu-decode]', or decode on the host (the default)")
        import torch
        from torchvision.transforms.v2 import InterpolationMode

        self.preprocessing, self.max_pixels = preprocessing, max_pixels
        self.device = torch.device(device)
        self._mode = "GRAY" if preprocessing.color_mode == "L" else "RGB"
        self._interpolation = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
                               "bicubic": InterpolationMode.BICUBIC}[preprocessing.interpolation]
        #: JPEGs meant for the device that it refused and the host decoded instead.
        self.host_fallbacks = 0
        self._probe()

    # --- public -------------------------------------------------------------------------------
    def decode(self, blobs: Sequence[bytes | np.ndarray]) -> tuple[list[Any], list[ImageDecodeError | None]]:
        """Decode a batch: one ``(H, W, C)`` uint8 tensor on the device per input, or its error.

        JPEGs are decoded together on the device; anything else (and any JPEG the device
        decoder refuses) goes through the host decoder. Returns ``(images, errors)``, both as
        long as ``blobs``: ``images[i]`` is None exactly where ``errors[i]`` is set.
        """
        images: list[Any] = [None] * len(blobs)
        errors: list[ImageDecodeError | None] = [None] * len(blobs)
        groups: list[list[int]] = [[]]
        pixels = 0
        for i, blob in enumerate(blobs):
            size = self._device_pixels(blob, i, errors) if isinstance(blob, bytes) else None
            if size is None:
                if errors[i] is None:
                    images[i], errors[i] = self._host(blob)
                continue
            if groups[-1] and (len(groups[-1]) >= GROUP_IMAGES or pixels + size > GROUP_PIXELS):
                groups.append([])
                pixels = 0
            groups[-1].append(i)
            pixels += size
        for group in groups:
            for i, image in zip(group, self._decode_jpegs([blobs[i] for i in group])):  # type: ignore[misc]
                images[i], errors[i] = self._finish(image, blobs[i])  # type: ignore[arg-type]
        if self.device.type == "cuda":  # the batch is complete on this thread's stream before it is handed on
            import torch

            torch.cuda.current_stream(self.device).synchronize()
        return images, errors

    def stack(self, images: Sequence[Any]) -> Any:
        """One contiguous ``(N, H, W, C)`` batch of decoded images, ready on the device.

        On CUDA the calling thread's stream is synchronised before returning: onnxruntime
        reads the batch on its own stream.
        """
        import torch

        batch = torch.stack(list(images)).contiguous()
        if batch.device.type == "cuda":
            torch.cuda.current_stream(batch.device).synchronize()  # onnxruntime runs on its own stream
        return batch

    # --- steps --------------------------------------------------------------------------------
    def _probe(self) -> None:
        """Decode one small JPEG on the device, so that a decoder that cannot work fails now, loudly."""
        from torchcodec.decoders import decode_jpeg

        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 100, 50)).save(buf, "JPEG")
        try:
            decode_jpeg(buf.getvalue(), mode=self._mode, device=self.device)
        except Exception as exc:
            raise BackendUnavailableError(f"TorchCodec cannot decode JPEGs on {self.device} ({type(exc).__name__}: "
                                    f"{exc}); decode on the host instead (decode='host', the default)") from None

    def _device_pixels(self, blob: bytes, index: int, errors: list[ImageDecodeError | None]) -> int | None:
        """Pixels of a JPEG the device decoder takes (RGB or greyscale, not CMYK); None for the host path.

        Over-sized images are refused here from the header (the size as displayed, after
        the EXIF orientation), as the host does, and recorded in ``errors``.
        """
        if not blob.startswith(_JPEG_MAGIC):
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(blob)) as img:
                    if img.format != "JPEG" or img.mode not in ("RGB", "L"):
                        return None
                    width, height = img.size
                    if img.getexif().get(0x0112) in _TRANSPOSING_ORIENTATIONS:
                        width, height = height, width
        except Exception:
            return None  # let the host decoder name what is wrong
        try:
            _check_size(width, height, self.preprocessing, "<bytes>", self.max_pixels)
        except ImageDecodeError as exc:
            errors[index] = exc
            return None
        return width * height

    def _decode_jpegs(self, blobs: list[bytes]) -> list[Any]:
        """Decoded ``(C, H, W)`` tensors on the device, None for each JPEG the decoder refused."""
        if not blobs:
            return []
        from torchcodec.decoders import decode_jpeg

        try:
            return list(decode_jpeg(list(blobs), mode=self._mode, device=self.device))
        except Exception:
            if len(blobs) == 1:
                return [None]
        out = []  # one bad file failed the batch: decode one by one to find it
        for blob in blobs:
            try:
                out.append(decode_jpeg(blob, mode=self._mode, device=self.device))
            except Exception:
                out.append(None)
        return out

    def _finish(self, image: Any | None, blob: bytes) -> tuple[Any, ImageDecodeError | None]:
        """Resize and crop a device-decoded image; the host decoder's result where the device failed."""
        if image is not None:
            try:
                return self._crop(image), None
            except Exception:  # e.g. out of device memory: the host path decides, and records any failure
                pass
        self.host_fallbacks += 1
        return self._host(blob)

    def _crop(self, image: Any) -> Any:
        """Resize (torchvision's rounding, antialiased) and centre-crop (``crop_offset``) ``(C, H, W)`` to ``(H, W, C)``."""
        import torchvision.transforms.v2.functional as F

        prep = self.preprocessing
        height, width = image.shape[-2:]
        target_w, target_h = _target_size(width, height, prep)
        if (target_w, target_h) != (width, height):
            image = F.resize(image, [target_h, target_w], interpolation=self._interpolation, antialias=True)
        if prep.resize_mode != "exact":
            crop_h, crop_w = prep.crop_size
            top, left = prep.crop_origin(target_h, target_w)
            image = image[:, top:top + crop_h, left:left + crop_w]
        return image.permute(1, 2, 0)

    def _host(self, blob: bytes | np.ndarray) -> tuple[Any, ImageDecodeError | None]:
        """The host decoder's result uploaded to the device, or its error."""
        import torch

        pixels, error = decode_or_error(blob, self.preprocessing)
        if error is not None:
            return None, error
        try:
            return torch.from_numpy(np.require(pixels, requirements=["C", "W"])).to(self.device), None
        except Exception as exc:  # a failed upload (e.g. out of device memory) must never stop the job
            return None, ImageDecodeError("<bytes>", type(exc).__name__, str(exc))

