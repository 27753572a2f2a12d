"""Tests of featurestore.sources: folder layouts, CSV lists, arrays, Fashion-MNIST, keys."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featurestore._idx import read_idx, read_idx_shape
from featurestore.errors import FeatureStoreError, SourceError
from featurestore.sources import (
    FASHION_MNIST_CLASSES,
    ArraySource,
    CsvSource,
    FashionMnistSource,
    FolderSource,
    ImageSource,
    SourceItem,
    content_key,
    open_source,
)

REAL_FMNIST = Path(os.environ.get("FEATURESTORE_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist")
needs_real_fmnist = pytest.mark.skipif(
    not (REAL_FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST IDX files not found in {REAL_FMNIST} (apt-get install dataset-fashion-mnist)",
)


def write_image(path: Path, value: int = 0, size: tuple[int, int] = (4, 3)) -> Path:
    """Write a tiny real image; the format follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF"}[path.suffix.lower()]
    Image.new("RGB", size, (value, 255 - value, 7)).save(path, format=fmt)
    return path


def rel_items(source: FolderSource | CsvSource, root: Path) -> list[tuple[str, str | None, str | None]]:
    return [(Path(item.path).relative_to(root).as_posix(), item.label, item.split) for item in source]


# --------------------------------------------------------------------------- content_key / SourceItem


def test_content_key_bytes_is_sha256() -> None:
    assert content_key(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert content_key(bytearray(b"abc")) == content_key(b"abc")


def test_content_key_arrays() -> None:
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert content_key(a) == content_key(a.copy())
    assert content_key(a) != content_key(a.reshape(4, 3)), "same bytes, different shape"
    assert content_key(a) != content_key(a.reshape(12))
    assert content_key(a) != content_key(a.astype(np.int8)), "same bytes, different dtype"
    fortran = np.asfortranarray(a)
    assert content_key(fortran) == content_key(a), "hashed in C order whatever the memory layout"
    assert content_key(a[:, ::2]) == content_key(np.ascontiguousarray(a[:, ::2]))
    expected = hashlib.sha256(b"|u1|(3, 4)|" + a.tobytes()).hexdigest()
    assert content_key(a) == expected
    assert content_key(a) != content_key(a.tobytes())


def test_content_key_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        content_key([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        content_key(np.array([object()], dtype=object))


def test_source_item_read_and_equality(tmp_path: Path) -> None:
    png = write_image(tmp_path / "a.png")
    item = SourceItem(str(png), "cat", "train")
    assert item.read() == png.read_bytes()
    arr = np.ones((2, 2), np.uint8)
    in_memory = SourceItem("array:00000", array=arr)
    assert in_memory.read() is arr
    assert SourceItem("x", array=arr) == SourceItem("x", array=np.zeros(1)), "array is not compared"
    assert len({SourceItem("x", array=arr), SourceItem("x")}) == 1
    assert "array=" not in repr(in_memory)
    with pytest.raises(FileNotFoundError):
        SourceItem(str(tmp_path / "missing.png")).read()


@pytest.mark.parametrize("kwargs", [{"path": ""}, {"path": 3}, {"path": "a", "label": 1}, {"path": "a", "array": [1]}])
def test_source_item_validates(kwargs: dict) -> None:
    with pytest.raises(SourceError):
        SourceItem(**kwargs)


def test_source_error_is_value_error() -> None:
    assert issubclass(SourceError, ValueError) and issubclass(SourceError, FeatureStoreError)


# --------------------------------------------------------------------------- FolderSource layouts


def test_folder_class_layout(tmp_path: Path) -> None:
    write_image(tmp_path / "dog" / "b.png")
    write_image(tmp_path / "cat" / "z.jpg")
    write_image(tmp_path / "cat" / "a.JPEG")
    write_image(tmp_path / "cat" / "deeper" / "c.bmp")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    write_image(tmp_path / "cat" / ".hidden.png")
    write_image(tmp_path / ".cache" / "x.png")
    source = open_source(tmp_path)
    assert isinstance(source, FolderSource) and isinstance(source, ImageSource)
    assert rel_items(source, tmp_path) == [
        ("cat/a.JPEG", "cat", None),
        ("cat/deeper/c.bmp", "cat", None),
        ("cat/z.jpg", "cat", None),
        ("dog/b.png", "dog", None),
    ]
    assert source.classes == ("cat", "dog")
    assert len(source) == 4
    assert source.name == f"folder:{tmp_path}"
    first = next(iter(source))
    assert first.array is None and first.read() == (tmp_path / "cat" / "a.JPEG").read_bytes()


def test_folder_flat_layout(tmp_path: Path) -> None:
    for name in ("b.gif", "a.png", "c.webp.png"):
        write_image(tmp_path / name)
    source = FolderSource(str(tmp_path))
    assert rel_items(source, tmp_path) == [("a.png", None, None), ("b.gif", None, None), ("c.webp.png", None, None)]
    assert source.classes == ()


def test_folder_split_class_layout(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "cat" / "1.png")
    write_image(tmp_path / "train" / "dog" / "2.png")
    write_image(tmp_path / "test" / "cat" / "3.png")
    write_image(tmp_path / "Validation" / "dog" / "4.png")
    source = FolderSource(tmp_path)
    assert rel_items(source, tmp_path) == [
        ("Validation/dog/4.png", "dog", "Validation"),
        ("test/cat/3.png", "cat", "test"),
        ("train/cat/1.png", "cat", "train"),
        ("train/dog/2.png", "dog", "train"),
    ]
    assert source.classes == ("cat", "dog")


def test_folder_split_unlabelled_layout(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "1.png")
    write_image(tmp_path / "val" / "2.png")
    source = FolderSource(tmp_path)
    assert rel_items(source, tmp_path) == [("train/1.png", None, "train"), ("val/2.png", None, "val")]
    assert source.classes == ()


def test_folder_labelled_train_unlabelled_test(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "cat" / "1.png")
    write_image(tmp_path / "test" / "2.png")
    assert rel_items(FolderSource(tmp_path), tmp_path) == [("test/2.png", None, "test"), ("train/cat/1.png", "cat", "train")]


@pytest.mark.parametrize(
    "files, message",
    [
        (["a.png", "cat/b.png"], "mixes images"),
        (["train/cat/a.png", "dog/b.png"], "split folders"),
        (["train/a.png", "train/cat/b.png"], "mixes images"),
    ],
)
def test_folder_mixed_layouts_raise(tmp_path: Path, files: list[str], message: str) -> None:
    for name in files:
        write_image(tmp_path / name)
    with pytest.raises(SourceError, match=message):
        FolderSource(tmp_path)


def test_folder_without_images_raises(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images")
    with pytest.raises(SourceError, match="no images"):
        open_source(tmp_path)


def test_folder_order_is_deterministic(tmp_path: Path) -> None:
    for i in (10, 2, 1, 33):
        write_image(tmp_path / "c" / f"{i}.png")
    paths = [item.path for item in FolderSource(tmp_path)]
    assert paths == sorted(paths)
    assert paths == [item.path for item in FolderSource(tmp_path)]


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_folder_follows_symlinks(tmp_path: Path) -> None:
    elsewhere = write_image(tmp_path / "elsewhere" / "real.png", value=9)
    root = tmp_path / "root"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "link.png").symlink_to(elsewhere)
    (root / "cat" / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (root / "cat" / "loop").symlink_to(root / "cat", target_is_directory=True)
    (root / "dog").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    source = FolderSource(root)
    assert rel_items(source, root) == [("cat/broken.png", "cat", None), ("cat/link.png", "cat", None),
                                       ("dog/real.png", "dog", None)]
    broken, link, _ = source
    assert link.read() == elsewhere.read_bytes()
    with pytest.raises(FileNotFoundError):  # listed, so that extract records it as a failure
        broken.read()


# --------------------------------------------------------------------------- CsvSource


def test_csv_relative_paths_and_columns(tmp_path: Path) -> None:
    a = write_image(tmp_path / "imgs" / "a.png", value=1)
    b = write_image(tmp_path / "elsewhere" / "b.png", value=2)
    lists = tmp_path / "lists"
    lists.mkdir()
    csv_file = lists / "items.csv"
    csv_file.write_text(
        "\ufeffnote, Split ,PATH,label\n"
        f"x,train,../imgs/a.png,cat\n"
        "\n"
        f"y,,{b},\n",
        encoding="utf-8",
    )
    source = open_source(str(csv_file))
    assert isinstance(source, CsvSource) and isinstance(source, ImageSource)
    items = list(source)
    assert [(Path(i.path).resolve(), i.label, i.split) for i in items] == [(a, "cat", "train"), (b, None, None)]
    assert items[0].read() == a.read_bytes()
    assert source.classes == ("cat",)
    assert source.name == f"csv:{csv_file}"


def test_tsv_and_path_only(tmp_path: Path) -> None:
    tsv = tmp_path / "items.tsv"
    tsv.write_text("label\tpath\nmy cat\tsub dir/a, b.png\n")
    assert [(i.path, i.label) for i in open_source(tsv)] == [(str(tmp_path / "sub dir" / "a, b.png"), "my cat")]
    csv_file = tmp_path / "paths.csv"
    csv_file.write_text("path\nz.png\na.png\n")
    items = list(CsvSource(csv_file))
    assert [Path(i.path).name for i in items] == ["z.png", "a.png"], "row order is kept"
    assert all(i.label is None and i.split is None for i in items)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty"),
        ("file,label\na.png,cat\n", "no 'path' column"),
        ("a.png,cat\n", "no 'path' column"),
        ("path,label\n,cat\n", "line 2: the path cell is empty"),
        ("path,path\na.png,b.png\n", "2 columns named 'path'"),
        ("path\na.png\nb.png\na.png\n", "already listed on line 2"),
    ],
)
def test_csv_errors(tmp_path: Path, text: str, message: str) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(text)
    with pytest.raises(SourceError, match=message):
        CsvSource(csv_file)


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        CsvSource(tmp_path / "missing.csv")


# --------------------------------------------------------------------------- ArraySource


def test_array_source_stack() -> None:
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    source = ArraySource(images, labels=[0, 1, 1], splits=["train", None, "test"])
    assert isinstance(source, ImageSource)
    items = list(source)
    assert [(i.path, i.label, i.split) for i in items] == [
        ("array:00000", "0", "train"),
        ("array:00001", "1", None),
        ("array:00002", "1", "test"),
    ]
    assert source.classes == ("0", "1") and len(source) == 3 and source.name == "arrays"
    assert all(np.shares_memory(item.read(), images) for item in items)
    assert content_key(items[0].read()) == content_key(images[0].copy())
    assert content_key(items[0].read()) != content_key(items[1].read())


def test_array_source_list_and_channels() -> None:
    rgb = np.zeros((2, 6, 6, 3), np.uint8)
    assert [i.array.shape for i in ArraySource(rgb, name="rgb")] == [(6, 6, 3)] * 2
    mixed = ArraySource([np.zeros((4, 4), np.uint8), np.zeros((8, 2, 3), np.float32)], labels=np.array([3, 4]))
    assert [i.label for i in mixed] == ["3", "4"] and mixed.classes == ("3", "4")
    assert list(ArraySource(np.zeros((0, 2, 2), np.uint8))) == []


def test_array_source_pads_to_width_of_n() -> None:
    source = ArraySource(np.zeros((100_001, 1, 1), np.uint8))
    paths = [item.path for item in source]
    assert paths[0] == "array:000000" and paths[-1] == "array:100000"


@pytest.mark.parametrize(
    "images, kwargs, message",
    [
        (np.zeros((4, 4), np.uint8), {}, "must be \\(N, H, W\\)"),
        ([np.zeros(4, np.uint8)], {}, "image 0 must be"),
        (np.zeros((2, 4, 4), np.uint8), {"labels": [1]}, "labels must be a sequence of 2"),
        (np.zeros((2, 4, 4), np.uint8), {"labels": "ab"}, "labels must be a sequence of 2"),
        (np.zeros((2, 4, 4), np.uint8), {"splits": ["train"] * 3}, "splits must be a sequence of 2"),
        (np.zeros((1, 2, 2), dtype=object), {}, "dtype object"),
        ("not images", {}, "numpy array or a list"),
    ],
)
def test_array_source_errors(images: object, kwargs: dict, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        ArraySource(images, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- IDX files and Fashion-MNIST


def write_idx(path: Path, array: np.ndarray, code: int = 0x08) -> Path:
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[code]
    data = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape) + array.astype(dtype).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def fake_fmnist(root: Path, n_train: int = 5, n_test: int = 3) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)
    return root


@pytest.mark.parametrize("name, code", [("a.idx", 0x0C), ("a.idx.gz", 0x0D), ("a.idx.gz", 0x08)])
def test_read_idx_round_trip(tmp_path: Path, name: str, code: int) -> None:
    array = np.arange(24).reshape(2, 3, 4)
    path = write_idx(tmp_path / name, array, code)
    out = read_idx(path)
    np.testing.assert_array_equal(out, array)
    assert out.dtype.isnative and not out.flags.writeable
    assert read_idx_shape(path) == (2, 3, 4)
    np.testing.assert_array_equal(read_idx(path, limit=1), array[:1])
    assert read_idx(path, limit=10).shape == (2, 3, 4)


def test_read_idx_errors(tmp_path: Path) -> None:
    good = write_idx(tmp_path / "good.idx", np.zeros((2, 3), np.uint8))
    with pytest.raises(SourceError, match="expected 3-d"):
        read_idx(good, ndim=3)
    truncated = tmp_path / "truncated.idx"
    truncated.write_bytes(good.read_bytes()[:-1])
    with pytest.raises(SourceError, match="truncated"):
        read_idx(truncated)
    with pytest.raises(SourceError, match="truncated"):
        read_idx(truncated, limit=2)
    bad_magic = tmp_path / "bad.idx"
    bad_magic.write_bytes(b"\x89PNG\r\n")
    with pytest.raises(SourceError, match="not an IDX file"):
        read_idx(bad_magic)
    not_gzip = tmp_path / "plain.idx.gz"
    not_gzip.write_bytes(good.read_bytes())
    with pytest.raises(SourceError, match="cannot read"):
        read_idx(not_gzip)
    with pytest.raises(SourceError, match="does not exist"):
        read_idx_shape(tmp_path / "missing.idx")


def test_fashion_mnist_fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_fmnist(tmp_path / "fm")
    source = FashionMnistSource("all", root=root)
    items = list(source)
    assert len(source) == len(items) == 8 and source.name == "fashion-mnist"
    assert [i.split for i in items] == ["train"] * 5 + ["test"] * 3
    assert items[0].path == "fashion-mnist:train/00000" and items[5].path == "fashion-mnist:test/00000"
    assert [i.label for i in items[:5]] == list(FASHION_MNIST_CLASSES[:5])
    assert source.classes == tuple(sorted(FASHION_MNIST_CLASSES[:5]))
    monkeypatch.setenv("FEATURESTORE_FASHION_MNIST_DIR", str(root))
    via_env = open_source("fashion-mnist:test")
    assert isinstance(via_env, FashionMnistSource) and len(via_env) == 3 and via_env.root == root
    limited = FashionMnistSource("train", limit=2)
    assert [i.path for i in limited] == ["fashion-mnist:train/00000", "fashion-mnist:train/00001"]


def test_fashion_mnist_bad_files(tmp_path: Path) -> None:
    root = fake_fmnist(tmp_path / "fm")
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(SourceError, match="holds 3 images but .* holds 4 labels"):
        FashionMnistSource("test", root=root)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 12], np.uint8))
    with pytest.raises(SourceError, match="label 12"):
        FashionMnistSource("test", root=root)
    (root / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(SourceError, match="does not exist"):
        FashionMnistSource("train", root=root)


@pytest.mark.parametrize("kwargs", [{"split": "val"}, {"limit": -1}, {"limit": 1.5}, {"root": "/no/such/dir"}])
def test_fashion_mnist_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(SourceError):
        FashionMnistSource(**kwargs)


@pytest.fixture(scope="module")
def real_fmnist() -> list[SourceItem]:
    return list(FashionMnistSource("all", root=REAL_FMNIST))


@needs_real_fmnist
def test_real_fashion_mnist(real_fmnist: list[SourceItem]) -> None:
    train = [i for i in real_fmnist if i.split == "train"]
    test = [i for i in real_fmnist if i.split == "test"]
    assert len(train) == 60_000 and len(test) == 10_000
    assert real_fmnist[:60_000] == train, "train comes first"
    assert train[0].path == "fashion-mnist:train/00000" and train[-1].path == "fashion-mnist:train/59999"
    assert test[-1].path == "fashion-mnist:test/09999"
    assert train[0].label == "Ankle boot" and test[0].label == "Ankle boot"
    assert {i.label for i in real_fmnist} == set(FASHION_MNIST_CLASSES)
    assert all(sum(i.label == name for i in test) == 1_000 for name in ("Bag", "T-shirt/top"))
    image = train[0].read()
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape == (28, 28)
    assert image.max() > 0
    source = FashionMnistSource("test", root=REAL_FMNIST)
    assert len(source) == 10_000 and source.classes == tuple(sorted(FASHION_MNIST_CLASSES))


@needs_real_fmnist
def test_real_fashion_mnist_limit(real_fmnist: list[SourceItem]) -> None:
    source = FashionMnistSource("all", limit=7, root=REAL_FMNIST)
    items = list(source)
    assert len(source) == len(items) == 14
    assert [i.path for i in items[:7]] == [i.path for i in real_fmnist[:7]]
    np.testing.assert_array_equal(items[8].array, real_fmnist[60_001].array)
    assert [i.label for i in items[7:]] == [i.label for i in real_fmnist[60_000:60_007]]


# --------------------------------------------------------------------------- open_source


def test_open_source_returns_sources_as_is() -> None:
    source = ArraySource(np.zeros((1, 2, 2), np.uint8))
    assert open_source(source) is source


@pytest.mark.parametrize("spec", ["fashion-mnist:val", "s3://bucket/images", "no/such/dir", 42, None])
def test_open_source_rejects(spec: object) -> None:
    with pytest.raises(SourceError, match="accepted: an ImageSource"):
        open_source(spec)  # type: ignore[arg-type]


def test_open_source_rejects_other_files(tmp_path: Path) -> None:
    png = write_image(tmp_path / "one.png")
    with pytest.raises(SourceError, match="not .csv/.tsv"):
        open_source(png)
