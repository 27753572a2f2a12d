"""Thumbnails for HTML pages: only the images asked for, bounded, and never an error for a bad path."""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import pytest
from PIL import Image

from featurestore.thumbnails import make_thumbnails


def _decoded(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_thumbnails_of_files_are_small_and_bad_paths_are_counted(tmp_path):
    Image.new("RGB", (640, 320), (10, 200, 30)).save(tmp_path / "big.jpg")
    Image.new("LA", (20, 20)).save(tmp_path / "grey.png")
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "page.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    os.mkfifo(tmp_path / "fifo")
    paths = [str(tmp_path / "big.jpg"), str(tmp_path / "gone.png"), str(tmp_path / "text.png"),
             str(tmp_path / "grey.png"), str(tmp_path / "page.eps"), str(tmp_path / "fifo"), "array:00001"]
    found = make_thumbnails(paths, size=64)
    assert sorted(found.images) == [0, 3]
    assert (found.missing, found.unreadable, found.skipped) == (2, 3, 5)  # gone + array:; text, EPS, FIFO
    big = _decoded(found.images[0])
    assert found.images[0].startswith("data:image/jpeg;base64,") and big.size == (64, 32)
    assert _decoded(found.images[3]).mode == "RGB"  # transparency flattened


def test_fashion_mnist_pseudo_paths_read_only_up_to_the_image_asked_for(tmp_path, monkeypatch):
    from featurestore.sources.fashion_mnist import FASHION_MNIST_DIR

    if not os.path.isfile(os.path.join(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz")):
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    from featurestore import FashionMnistSource

    found = make_thumbnails(["fashion-mnist:test/00003", "fashion-mnist:test/99999", "fashion-mnist:train/00000"])
    assert sorted(found.images) == [0, 2] and found.missing == 1
    expected = next(item for i, item in enumerate(FashionMnistSource("test", limit=4)) if i == 3).array
    assert np.array_equal(np.asarray(_decoded(found.images[0]).resize((28, 28), Image.Resampling.NEAREST)), expected)
    monkeypatch.setenv("FEATURESTORE_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    assert make_thumbnails(["fashion-mnist:test/00003"]).missing == 1
