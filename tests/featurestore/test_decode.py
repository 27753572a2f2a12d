"""Tests of featurestore.decode on real JPEG/PNG files written under tmp_path."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from images import (
    EXIF_ORIENTATION,
    smooth_rgb,
    write_bad_images,
    write_good_images,
    write_jpeg,
    write_png_bomb,
    write_tricky_images,
)

from featurestore.decode import BACKGROUND, MAX_PIXELS, decode_image, preprocess_array, preprocess_pil, to_color_mode
from featurestore.errors import ImageDecodeError
from featurestore.spec import Preprocessing

RGB = Preprocessing(crop_size=(32, 32), resize_size=36)
GRAY = Preprocessing(crop_size=(32, 32), resize_mode="exact", color_mode="L", mean=(0.5,), std=(0.5,))
PREPROCESSINGS = {"rgb_shorter_side": RGB, "gray_exact": GRAY}


def exact(h: int, w: int, color_mode: str = "RGB") -> Preprocessing:
    """Exact resize to (h, w): the same size as the file means no resampling at all."""
    n = 3 if color_mode == "RGB" else 1
    return Preprocessing(crop_size=(h, w), resize_mode="exact", color_mode=color_mode, mean=(0.5,) * n, std=(0.5,) * n)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("decode_images")


@pytest.fixture(scope="module")
def good(image_dir: Path) -> list[Path]:
    return write_good_images(image_dir / "good", n=6, size=(64, 48), seed=0)


@pytest.fixture(scope="module")
def bad(image_dir: Path) -> dict[str, Path]:
    return write_bad_images(image_dir / "bad")


@pytest.fixture(scope="module")
def tricky(image_dir: Path) -> dict[str, Path]:
    return write_tricky_images(image_dir / "tricky")


def png_bytes(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, "PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- bad input

BAD_CAUSES = {
    "zero_byte": "UnidentifiedImageError",
    "truncated_jpeg": "OSError",
    "html_as_jpg": "UnidentifiedImageError",
    "bomb": "DecompressionBombError",
}


@pytest.mark.parametrize("kind", sorted(BAD_CAUSES))
@pytest.mark.parametrize("name", sorted(PREPROCESSINGS))
def test_bad_file_raises_image_decode_error(bad: dict[str, Path], kind: str, name: str) -> None:
    path = bad[kind]
    with pytest.raises(ImageDecodeError) as info:
        decode_image(path, PREPROCESSINGS[name])
    err = info.value
    assert isinstance(err, ValueError)
    assert err.path == str(path)
    assert err.cause == BAD_CAUSES[kind]
    assert str(path) in str(err) and BAD_CAUSES[kind] in str(err)


@pytest.mark.parametrize("kind", sorted(BAD_CAUSES))
def test_bad_bytes_raise_with_placeholder_path(bad: dict[str, Path], kind: str) -> None:
    with pytest.raises(ValueError) as info:  # catchable as the builtin too
        decode_image(bad[kind].read_bytes(), RGB)
    assert isinstance(info.value, ImageDecodeError)
    assert info.value.path == "<bytes>"
    assert info.value.cause == BAD_CAUSES[kind]


def test_truncated_jpeg_fails_on_both_draft_settings(bad: dict[str, Path]) -> None:
    for draft in (True, False):
        with pytest.raises(ImageDecodeError, match="truncated"):
            decode_image(bad["truncated_jpeg"], RGB, draft=draft)


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "nope.jpg", RGB)


def test_bombs_are_refused_fast_and_without_decoding(tmp_path: Path) -> None:
    """Run in a fresh process so its peak RSS measures only the decode attempts."""
    cases = {
        # header alone is over Pillow's hard limit (2 x MAX_PIXELS)
        "huge": write_png_bomb(tmp_path / "huge.png", 20_000, 20_000),
        # between MAX_PIXELS and 2 x MAX_PIXELS, where Pillow itself only warns
        "warn_zone": write_png_bomb(tmp_path / "warn_zone.png", 10_000, 10_000),
        # few pixels, but resizing the short side to 36 would make 36 x 108,000,000
        "sliver": write_png_bomb(tmp_path / "sliver.png", 1, 3_000_000),
    }
    assert all(p.stat().st_size < 1_000_000 for p in cases.values())
    script = textwrap.dedent(
        f"""
        import json, resource, sys, time
        from featurestore.decode import decode_image
        from featurestore.errors import ImageDecodeError
        from featurestore.spec import Preprocessing
        pre = Preprocessing(crop_size=(32, 32), resize_size=36)
        cases = {json.dumps({k: str(v) for k, v in cases.items()})}
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = {{}}
        for name, path in cases.items():
            start = time.perf_counter()
            try:
                decode_image(path, pre)
                cause = None
            except ImageDecodeError as exc:
                cause = exc.cause
            out[name] = [cause, time.perf_counter() - start]
        out["rss_growth_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps(out))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in cases:
        cause, seconds = out[name]
        assert cause == "DecompressionBombError", (name, out)
        assert seconds < 1.0, (name, out)
    # decoding the 20000 x 20000 bomb would need 400 MB; refusing it needs next to nothing
    assert out["rss_growth_kb"] < 64 * 1024, out


def test_max_pixels_is_checked_on_the_header(good: list[Path]) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(good[0], RGB, max_pixels=64 * 48 - 1)
    assert info.value.cause == "DecompressionBombError"
    assert info.value.path == str(good[0])
    assert decode_image(good[0], RGB, max_pixels=64 * 48).shape == (32, 32, 3)


def test_pillow_warning_zone_is_reported_as_a_bomb(tmp_path: Path) -> None:
    """From MAX_PIXELS to twice that Pillow only warns; the refusal must look like any other bomb."""
    path = write_png_bomb(tmp_path / "wide.png", 20_000, 4_500)
    assert MAX_PIXELS < 20_000 * 4_500 < 2 * MAX_PIXELS
    with pytest.raises(ImageDecodeError) as info:
        decode_image(path, RGB)
    assert info.value.cause == "DecompressionBombError"
    assert "pixels" in str(info.value)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", sorted(PREPROCESSINGS))
def test_every_good_and_tricky_image_has_the_graph_shape(
    good: list[Path], tricky: dict[str, Path], name: str
) -> None:
    pre = PREPROCESSINGS[name]
    for path in [*good, *tricky.values()]:
        for draft in (True, False):
            out = decode_image(path, pre, draft=draft)
            assert out.dtype == np.uint8, path
            assert out.shape == (32, 32, pre.channels), path
            assert out.flags.c_contiguous, path


@pytest.mark.parametrize("name", sorted(PREPROCESSINGS))
def test_bytes_equal_path(good: list[Path], tricky: dict[str, Path], name: str) -> None:
    pre = PREPROCESSINGS[name]
    for path in [*good, *tricky.values()]:
        np.testing.assert_array_equal(decode_image(path.read_bytes(), pre), decode_image(path, pre), err_msg=str(path))
        np.testing.assert_array_equal(decode_image(str(path), pre), decode_image(path, pre), err_msg=str(path))


@pytest.mark.parametrize(
    ("size", "crop", "resize"),
    [
        ((64, 48), (32, 32), 36),
        ((48, 64), (32, 32), 36),
        ((101, 37), (32, 32), 36),
        ((37, 101), (30, 20), 34),
        ((300, 200), (24, 40), 48),
        ((50, 50), (31, 29), 33),
        ((36, 80), (32, 32), 36),  # short side already at the target: no resampling
        ((20, 30), (32, 32), 40),  # upscaling
    ],
)
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_shorter_side_matches_torchvision(
    tmp_path: Path, size: tuple[int, int], crop: tuple[int, int], resize: int, interpolation: str
) -> None:
    tvf = pytest.importorskip("torchvision.transforms.functional")
    from torchvision.transforms import InterpolationMode

    pre = Preprocessing(crop_size=crop, resize_size=resize, interpolation=interpolation)
    path = tmp_path / "img.png"
    Image.fromarray(smooth_rgb(size, seed=5), mode="RGB").save(path)
    with Image.open(path) as img:
        expected = tvf.center_crop(tvf.resize(img, resize, interpolation=InterpolationMode(interpolation)), list(crop))
        expected = np.asarray(expected)
    got = decode_image(path, pre, draft=False)
    assert got.shape == (*crop, 3)
    np.testing.assert_array_equal(got, expected)


def test_exact_resize_ignores_aspect_ratio(good: list[Path]) -> None:
    pre = exact(20, 50)
    with Image.open(good[1]) as img:
        expected = np.asarray(img.convert("RGB").resize((50, 20), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(decode_image(good[1], pre, draft=False), expected)


# --------------------------------------------------------------------------- colour modes


def test_png16_is_scaled_not_clipped(tricky: dict[str, Path]) -> None:
    with Image.open(tricky["png16"]) as img:
        assert img.mode == "I;16"
        raw = np.asarray(img).astype(np.float64)
    assert raw.min() == 0 and raw.max() == 65535
    h, w = raw.shape
    expected = np.rint(raw / 257.0).astype(np.uint8)

    got = decode_image(tricky["png16"], exact(h, w, "L"), draft=False)[:, :, 0]
    np.testing.assert_array_equal(got, expected)
    assert got.min() == 0 and got.max() == 255
    assert np.mean(got == 255) < 0.01  # Pillow's convert("RGB") would clip ~all of them

    rgb = decode_image(tricky["png16"], exact(h, w, "RGB"), draft=False)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], expected)

    resized = decode_image(tricky["png16"], RGB)
    assert resized.shape == (32, 32, 3)
    assert np.mean(resized == 255) < 0.05
    expected_resized = np.asarray(
        preprocess_pil(Image.fromarray(expected, mode="L").convert("RGB"), RGB)
    )
    np.testing.assert_array_equal(resized, expected_resized)


def test_rgba_is_composited_on_white(tricky: dict[str, Path]) -> None:
    assert BACKGROUND == (255, 255, 255)
    with Image.open(tricky["rgba_png"]) as img:
        rgba = np.asarray(img).astype(np.float64)
    h, w = rgba.shape[:2]
    alpha = rgba[:, :, 3:] / 255.0
    expected = rgba[:, :, :3] * alpha + np.array(BACKGROUND) * (1 - alpha)
    got = decode_image(tricky["rgba_png"], exact(h, w), draft=False).astype(np.float64)
    assert np.abs(got - expected).max() <= 1.0
    assert (got[:, 0] == 255).all()  # alpha 0 at the left edge: pure background
    np.testing.assert_array_equal(got[:, -1], rgba[:, -1, :3])  # opaque right edge: unchanged


def test_la_is_composited_on_white(tricky: dict[str, Path]) -> None:
    with Image.open(tricky["la_png"]) as img:
        assert img.mode == "LA"
        la = np.asarray(img).astype(np.float64)
    h, w = la.shape[:2]
    alpha = la[:, :, 1] / 255.0
    expected = la[:, :, 0] * alpha + 255.0 * (1 - alpha)
    gray = decode_image(tricky["la_png"], exact(h, w, "L"), draft=False)[:, :, 0].astype(np.float64)
    assert np.abs(gray - expected).max() <= 1.0
    rgb = decode_image(tricky["la_png"], exact(h, w, "RGB"), draft=False).astype(np.float64)
    for c in range(3):
        assert np.abs(rgb[:, :, c] - expected).max() <= 1.0


def test_palette_png(tricky: dict[str, Path]) -> None:
    with Image.open(tricky["palette_png"]) as img:
        assert img.mode == "P" and "transparency" not in img.info
        expected = np.asarray(img.convert("RGB"))
    h, w = expected.shape[:2]
    np.testing.assert_array_equal(decode_image(tricky["palette_png"], exact(h, w), draft=False), expected)


def test_palette_transparency_becomes_background(tricky: dict[str, Path]) -> None:
    with Image.open(tricky["palette_transparent_png"]) as img:
        assert img.mode == "P" and img.info.get("transparency") == 0
        index = np.asarray(img)
        colours = np.asarray(img.convert("RGB"))
    h, w = index.shape
    got = decode_image(tricky["palette_transparent_png"], exact(h, w), draft=False)
    hole = index == 0
    assert hole.any() and not hole.all()
    assert (got[hole] == np.array(BACKGROUND, dtype=np.uint8)).all()
    np.testing.assert_array_equal(got[~hole], colours[~hole])


def test_cmyk_jpeg_gives_rgb(tricky: dict[str, Path]) -> None:
    with Image.open(tricky["cmyk_jpeg"]) as img:
        assert img.mode == "CMYK"
        h, w = img.height, img.width
    got = decode_image(tricky["cmyk_jpeg"], exact(h, w), draft=False)
    assert got.shape == (h, w, 3) and got.dtype == np.uint8
    # the file was written from smooth_rgb(seed=21); colours survive, not inverted
    original = smooth_rgb((w, h), seed=21).astype(np.float64)
    assert np.abs(got - original).mean() < 6.0
    assert decode_image(tricky["cmyk_jpeg"], GRAY).shape == (32, 32, 1)


def test_grayscale_jpeg(tricky: dict[str, Path]) -> None:
    with Image.open(tricky["grayscale_jpeg"]) as img:
        assert img.mode == "L"
        expected = np.asarray(img)
    h, w = expected.shape
    gray = decode_image(tricky["grayscale_jpeg"], exact(h, w, "L"), draft=False)
    np.testing.assert_array_equal(gray[:, :, 0], expected)
    rgb = decode_image(tricky["grayscale_jpeg"], exact(h, w), draft=False)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], expected)


def test_gray_model_takes_luma_of_rgb(good: list[Path]) -> None:
    with Image.open(good[1]) as img:
        expected = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(decode_image(good[1], GRAY, draft=False)[:, :, 0], expected)


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "I", "I;16", "F"])
@pytest.mark.parametrize("color_mode", ["RGB", "L"])
def test_to_color_mode_covers_every_common_mode(mode: str, color_mode: str) -> None:
    img = Image.fromarray(smooth_rgb((16, 12), seed=3), mode="RGB").convert(mode)
    out = to_color_mode(img, color_mode)
    assert out.mode == color_mode and out.size == (16, 12)


# --------------------------------------------------------------------------- EXIF


@pytest.mark.parametrize("name", sorted(PREPROCESSINGS))
def test_exif_rotated_jpeg_equals_its_reference(tricky: dict[str, Path], name: str) -> None:
    with Image.open(tricky["exif_rotated_jpeg"]) as img:
        assert img.getexif().get(EXIF_ORIENTATION) == 6
        stored = img.size
    with Image.open(tricky["exif_rotated_reference"]) as img:
        assert img.size == stored[::-1]
    pre = PREPROCESSINGS[name]
    for draft in (True, False):
        np.testing.assert_array_equal(
            decode_image(tricky["exif_rotated_jpeg"], pre, draft=draft),
            decode_image(tricky["exif_rotated_reference"], pre, draft=draft),
        )
    w, h = stored
    full = decode_image(tricky["exif_rotated_jpeg"], exact(w, h), draft=False)  # displayed: h x w swapped
    with Image.open(tricky["exif_rotated_reference"]) as img:
        np.testing.assert_array_equal(full, np.asarray(img))


# --------------------------------------------------------------------------- draft


@pytest.fixture(scope="module")
def big_jpeg(image_dir: Path) -> Path:
    return write_jpeg(image_dir / "big.jpg", (1600, 1200), seed=7)


@pytest.mark.parametrize(
    "pre",
    [RGB, GRAY, Preprocessing(crop_size=(224, 224), resize_size=256), exact(100, 300)],
    ids=["rgb36", "gray_exact32", "rgb256", "exact100x300"],
)
def test_draft_is_close_to_full_decode(big_jpeg: Path, pre: Preprocessing) -> None:
    fast = decode_image(big_jpeg, pre, draft=True)
    full = decode_image(big_jpeg, pre, draft=False)
    assert fast.shape == full.shape == (*pre.crop_size, pre.channels)
    assert fast.dtype == np.uint8
    assert np.abs(fast.astype(np.float64) - full).mean() < 3.0


def test_draft_is_faster_on_a_big_jpeg(big_jpeg: Path) -> None:
    def best(draft: bool) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            decode_image(big_jpeg, RGB, draft=draft)
            times.append(time.perf_counter() - start)
        return min(times)

    assert best(True) < best(False)


def test_draft_respects_exif_orientation(tmp_path: Path) -> None:
    """A 90-degree EXIF rotation swaps which stored side becomes the output width."""
    rng = np.random.default_rng(8)
    # displayed 400 wide x 1600 tall, with fine vertical stripes that a too-coarse draft would erase
    displayed = np.repeat(rng.integers(0, 256, size=(1, 400, 3), dtype=np.uint8), 1600, axis=0)
    stored = np.ascontiguousarray(np.rot90(displayed, k=1))  # orientation 6 rotates it back
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    path = tmp_path / "rotated_big.jpg"
    Image.fromarray(stored, mode="RGB").save(path, "JPEG", quality=95, exif=exif.tobytes())
    pre = exact(50, 300)  # 400 -> 300 wide, 1600 -> 50 tall
    fast = decode_image(path, pre, draft=True)
    full = decode_image(path, pre, draft=False)
    assert fast.shape == full.shape == (50, 300, 3)
    assert np.abs(fast.astype(np.float64) - full).mean() < 3.0


# --------------------------------------------------------------------------- arrays


@pytest.fixture(scope="module")
def rgb_array() -> np.ndarray:
    return smooth_rgb((64, 48), seed=4)


def test_array_rgb_equals_decoded_png(rgb_array: np.ndarray) -> None:
    for pre in PREPROCESSINGS.values():
        np.testing.assert_array_equal(
            preprocess_array(rgb_array, pre), decode_image(png_bytes(rgb_array, "RGB"), pre)
        )


def test_array_gray_2d_and_single_channel(rgb_array: np.ndarray) -> None:
    gray = np.asarray(Image.fromarray(rgb_array).convert("L"))
    for pre in PREPROCESSINGS.values():
        expected = decode_image(png_bytes(gray, "L"), pre)
        assert expected.shape == (32, 32, pre.channels)
        np.testing.assert_array_equal(preprocess_array(gray, pre), expected)
        np.testing.assert_array_equal(preprocess_array(gray[:, :, None], pre), expected)


def test_array_rgba_composited(rgb_array: np.ndarray) -> None:
    alpha = np.zeros(rgb_array.shape[:2], dtype=np.uint8)
    alpha[:, 32:] = 255
    rgba = np.dstack([rgb_array, alpha])
    out = preprocess_array(rgba, exact(48, 64))
    assert (out[:, :32] == 255).all()
    np.testing.assert_array_equal(out[:, 32:], rgb_array[:, 32:])
    np.testing.assert_array_equal(preprocess_array(rgba, RGB), decode_image(png_bytes(rgba, "RGBA"), RGB))


@pytest.mark.parametrize("shape", [(48, 64), (48, 64, 1), (48, 64, 3), (48, 64, 4)])
def test_array_uint16_scaled_like_png16(rgb_array: np.ndarray, shape: tuple[int, ...]) -> None:
    base = np.dstack([rgb_array, np.full(rgb_array.shape[:2], 255, np.uint8)])  # opaque alpha
    base = base[:, :, : shape[2]] if len(shape) == 3 else base[:, :, 0]
    wide = base.astype(np.uint16) * 257 + np.uint16(100)  # +100 rounds back to the same uint8
    wide[base == 255] = 65535
    for pre in PREPROCESSINGS.values():
        np.testing.assert_array_equal(preprocess_array(wide, pre), preprocess_array(base, pre))


@pytest.mark.parametrize("shape", [(48, 64), (48, 64, 1), (48, 64, 3), (48, 64, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_array_float_unit_range(rgb_array: np.ndarray, shape: tuple[int, ...], dtype: type) -> None:
    base = np.dstack([rgb_array, np.full(rgb_array.shape[:2], 255, np.uint8)])
    base = base[:, :, : shape[2]] if len(shape) == 3 else base[:, :, 0]
    unit = (base / 255.0).astype(dtype)
    for pre in PREPROCESSINGS.values():
        np.testing.assert_array_equal(preprocess_array(unit, pre), preprocess_array(base, pre))


def test_array_float_outside_unit_range_is_clipped(rgb_array: np.ndarray) -> None:
    values = rgb_array.astype(np.float64)
    values[0, 0] = 300.0
    values[0, 1] = -7.0
    values[0, 2] = np.nan
    out = preprocess_array(values, exact(48, 64))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 1]) == (0, 0, 0)
    assert tuple(out[0, 2]) == (0, 0, 0)
    np.testing.assert_array_equal(out[1:], rgb_array[1:])


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((48,), np.uint8),
        np.zeros((48, 64, 2), np.uint8),
        np.zeros((48, 64, 5), np.uint8),
        np.zeros((2, 48, 64, 3), np.uint8),
        np.zeros((0, 64), np.uint8),
        np.zeros((48, 0, 3), np.uint8),
    ],
    ids=["1d", "2ch", "5ch", "4d", "no_rows", "no_cols"],
)
def test_array_bad_shape(array: np.ndarray) -> None:
    with pytest.raises(ImageDecodeError) as info:
        preprocess_array(array, RGB)
    assert isinstance(info.value, ValueError)
    assert info.value.path == "<array>"
    assert str(array.shape) in str(info.value)


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint32, np.bool_, np.complex64])
def test_array_bad_dtype(dtype: type) -> None:
    with pytest.raises(ImageDecodeError) as info:
        preprocess_array(np.zeros((48, 64, 3), dtype), RGB)
    assert info.value.path == "<array>"
    assert np.dtype(dtype).name in str(info.value)


def test_array_extreme_aspect_ratio_is_refused() -> None:
    """A 1 x 3,000,000 array would be resized to 36 x 108,000,000 pixels."""
    with pytest.raises(ImageDecodeError) as info:
        preprocess_array(np.zeros((3_000_000, 1), np.uint8), RGB)
    assert info.value.cause == "DecompressionBombError"


def test_empty_pil_image_is_refused() -> None:
    with pytest.raises(ImageDecodeError) as info:
        preprocess_pil(Image.new("RGB", (0, 5)), RGB)
    assert info.value.path == "<image>"
    assert "0x5" in str(info.value)


@pytest.mark.parametrize("fmt", ["EPS", "ICO", "TGA", "PCX", "SGI"])
def test_only_common_raster_formats_are_decoded(tmp_path: Path, fmt: str) -> None:
    """An image is untrusted: a file Pillow would hand to Ghostscript (EPS), or to a rarely used
    decoder, is refused whatever its name says, as a decode error naming the file."""
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(path, format=fmt)
    with Image.open(path) as img:  # the control: Pillow itself identifies the file
        assert img.format == fmt
    with pytest.raises(ImageDecodeError, match="photo.jpg"):
        decode_image(path, RGB)
    with pytest.raises(ImageDecodeError):
        decode_image(path.read_bytes(), RGB)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM"])
def test_common_raster_formats_decode(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"photo.{fmt.lower()}"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(path, format=fmt)
    assert decode_image(path, RGB).shape == (32, 32, 3)


# margin (resized size minus crop) -> (floor offset, torchvision's round-half-to-even offset)
_CROP_OFFSETS = {0: (0, 0), 1: (0, 0), 2: (1, 1), 3: (1, 2), 5: (2, 2), 6: (3, 3), 7: (3, 4), 11: (5, 6)}


@pytest.mark.parametrize("margin", sorted(_CROP_OFFSETS))
def test_crop_offset_floor_and_round_differ_exactly_on_margins_3_mod_4(margin: int) -> None:
    """An image already at its resize target (no resampling) with distinct pixels: the crop starts at
    ``margin // 2`` with ``floor`` and at ``round(margin / 2)`` with ``round``, a pixel apart only when
    the margin is 3 mod 4 (half to even rounds 1.5 to 2 but 2.5 to 2)."""
    height, crop = 12, (8, 12)  # width >= height: the shorter side is already at resize_size
    width = crop[1] + margin
    pixels = np.arange(height * width * 3, dtype=np.uint32).reshape(height, width, 3)
    image = (pixels % 251).astype(np.uint8)
    image[..., 0] = np.arange(width, dtype=np.uint8)[None, :]  # column index: where the crop starts
    image[..., 1] = np.arange(height, dtype=np.uint8)[:, None]  # row index
    floor_left, round_left = _CROP_OFFSETS[margin]
    got = {}
    for rule in ("floor", "round"):
        pre = Preprocessing(crop_size=crop, resize_size=height, crop_offset=rule)
        assert pre.crop_origin(height, width) == (2, floor_left if rule == "floor" else round_left)
        got[rule] = preprocess_array(image, pre)
        top, left = pre.crop_origin(height, width)
        np.testing.assert_array_equal(got[rule], image[top:top + crop[0], left:left + crop[1]])
    assert int(got["floor"][0, 0, 0]) == floor_left and int(got["round"][0, 0, 0]) == round_left
    assert np.array_equal(got["floor"], got["round"]) == (margin % 4 != 3)


def test_crop_offset_is_checked() -> None:
    from featurestore.errors import SpecError

    with pytest.raises(SpecError, match="crop_offset 'ceil' not in"):
        Preprocessing(crop_size=(8, 8), resize_size=8, crop_offset="ceil")
