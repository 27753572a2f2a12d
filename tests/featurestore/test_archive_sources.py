"""Archive and table sources (zip, WebDataset tar shards, Parquet/Arrow, Hugging Face datasets):
each built from the same real images, extracted through the CLI, must give rows bit-equal to
the image folder's, with the same keys; hostile members are recorded once and never written out."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import struct
import subprocess
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from featurestore import open_store, verify_store
from featurestore.cli import main
from featurestore.errors import ArchiveMemberError, FileTooLargeError, SourceError
from featurestore.sources import (
    MAX_COMPRESSION_RATIO, FolderSource, TableSource, WebDatasetSource, ZipSource, open_source,
)
from featurestore.sources.members import unsafe_name
from featurestore.sources.webdataset import expand_braces
from images import write_good_images

#: The same images for every format: train/test splits, two classes each.
LAYOUT = {("train", "cat"): 70, ("train", "dog"): 70, ("test", "cat"): 30, ("test", "dog"): 30}
N_IMAGES = sum(LAYOUT.values())


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """``imgs/<split>/<class>/good_NNN.{jpg,png}``: 200 real JPEG and PNG images."""
    root = tmp_path_factory.mktemp("tree") / "imgs"
    seed = 0
    for (split, label), n in LAYOUT.items():
        write_good_images(root / split / label, n=n, size=(40, 30), seed=seed)
        seed += n
    return root


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def folder_rows(tree, tiny_onnx, tmp_path_factory) -> dict[str, tuple]:
    """key -> (label, split, features of every layer) of the folder's extraction."""
    store = tmp_path_factory.mktemp("folder") / "store"
    assert _extract(tiny_onnx, tree, store) == 0
    return _rows(store)


def _extract(model: Path, source: Path | str, store: Path, *extra: str) -> int:
    return main(["extract", str(model), str(source), "-o", str(store), "--device", "cpu", "--batch-size", "16",
                 "--shard-rows", "64", "--no-progress", *extra])


def _rows(store: Path) -> dict[str, tuple]:
    data = open_store(store).load()
    keys = data.keys.tolist()
    assert len(set(keys)) == len(keys), "a key is stored twice"
    matrix = data.matrix()
    labels, splits = data.labels.tolist(), data.splits.tolist()
    return {k: (labels[i], splits[i], matrix[i]) for i, k in enumerate(keys)}


def _assert_same_rows(got: dict[str, tuple], want: dict[str, tuple]) -> None:
    assert got.keys() == want.keys()
    for key, (label, split, features) in want.items():
        assert got[key][:2] == (label, split), key
        np.testing.assert_array_equal(got[key][2], features)


def _snapshot(root: Path, skip: Path) -> dict[str, str]:
    """Every file under ``root`` except those under ``skip``, with its sha256 (what a run may not change)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "link"
            for p in sorted(root.rglob("*")) if skip not in p.parents and (p.is_file() or p.is_symlink())}


# --------------------------------------------------------------------------------------- zip


def _zip_tree(root: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in _files(root):
            zf.write(path, prefix + path.relative_to(root).as_posix())
    return archive


@pytest.mark.parametrize("name", [
    "cat/001.jpg", "a.b/c.png", "./a.png", "a//b.png", "./cat/./a.png",
])
def test_safe_member_names(name):
    assert unsafe_name(name) is None


@pytest.mark.parametrize("name", [
    "../evil.png", "a/../../evil.png", "./../evil.png", "/etc/evil.png", "a\\..\\evil.png", "C:/evil.png",
    "c:evil.png", "a/\x00.png", "", "./", "//",
])
def test_unsafe_member_names(name):
    assert unsafe_name(name)


def test_zip_extracts_bit_equal_to_the_folder(tree, folder_rows, tiny_onnx, tmp_path):
    archive = _zip_tree(tree, tmp_path / "imgs.zip", prefix="imgs/")  # as `zip -r imgs.zip imgs` lays it out
    source = open_source(archive)
    assert isinstance(source, ZipSource) and len(source) == N_IMAGES
    assert source.classes == ("cat", "dog")
    first = next(iter(source))
    assert first.path == f"{archive}#imgs/test/cat/good_000.jpg" and (first.label, first.split) == ("cat", "test")

    assert _extract(tiny_onnx, archive, tmp_path / "store") == 0
    _assert_same_rows(_rows(tmp_path / "store"), folder_rows)
    paths = open_store(tmp_path / "store").paths.tolist()
    assert all(p.startswith(f"{archive}#imgs/") for p in paths)
    assert verify_store(tmp_path / "store") == []

    # Incremental: a rerun decodes nothing; the same tree without its top folder gives the same keys.
    assert _extract(tiny_onnx, archive, tmp_path / "store") == 0
    assert len(open_store(tmp_path / "store").keys) == N_IMAGES
    bare = _zip_tree(tree, tmp_path / "other.zip")
    assert [(i.label, i.split) for i in open_source(bare)] == [(i.label, i.split) for i in source]


def _patch_zip(archive: Path, member: str, *, flag: int = 0, size: int | None = None) -> None:
    """OR ``flag`` into a member's general-purpose flags, or set its declared size, in its headers."""
    data = bytearray(archive.read_bytes())
    name = member.encode()
    at = 0
    while (at := data.find(b"PK\x01\x02", at)) >= 0:  # central directory entries
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46: at + 46 + name_len]) == name:
            struct.pack_into("<H", data, at + 8, struct.unpack_from("<H", data, at + 8)[0] | flag)
            if size is not None:
                struct.pack_into("<I", data, at + 24, size)
            local = struct.unpack_from("<I", data, at + 42)[0]
            struct.pack_into("<H", data, local + 6, struct.unpack_from("<H", data, local + 6)[0] | flag)
            if size is not None:
                struct.pack_into("<I", data, local + 22, size)
        at += 4
    archive.write_bytes(bytes(data))


def _hostile_zip(tmp_path: Path, good: list[Path]) -> Path:
    archive = tmp_path / "work" / "hostile.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in good:
            zf.write(path, f"cat/{path.name}")
        for name in ("../evil.png", "../../evil2.png", "/tmp/abs_evil.png", "cat\\..\\..\\evil3.png", "C:/evil4.png"):
            zf.writestr(name, good[0].read_bytes())
        link = zipfile.ZipInfo("cat/link.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("cat/twice.png", good[0].read_bytes())
            zf.writestr("cat/twice.png", good[1].read_bytes())
        zf.writestr("cat/bomb.png", bytes(3 << 19))  # 1.5 MiB of zeros: deflates ~1000x
        zf.writestr("cat/big.png", np.random.default_rng(0).bytes(2_500_000), zipfile.ZIP_STORED)
        zf.writestr("cat/secret.png", good[0].read_bytes())
        zf.writestr("cat/liar.png", good[1].read_bytes())
        zf.writestr("cat/notes.txt", "not an image")
    _patch_zip(archive, "cat/secret.png", flag=0x1)
    _patch_zip(archive, "cat/liar.png", size=100)  # declares fewer bytes than it inflates to
    return archive


def test_zip_hostile_members_are_recorded_once_and_never_written(tiny_onnx, tmp_path):
    good = write_good_images(tmp_path / "good", n=3, size=(40, 30), seed=500)
    archive = _hostile_zip(tmp_path, good)
    before = _snapshot(tmp_path, tmp_path / "store")
    store = tmp_path / "store"
    assert _extract(tiny_onnx, archive, store, "--max-file-bytes", "2000000") == 0
    failures = {f["path"].split("#", 1)[1]: (f["error"], f["message"]) for f in open_store(store).failures}
    assert sorted(failures) == sorted([
        "../evil.png", "../../evil2.png", "/tmp/abs_evil.png", "cat\\..\\..\\evil3.png", "C:/evil4.png",
        "cat/link.png", "cat/twice.png", "cat/bomb.png", "cat/big.png", "cat/secret.png", "cat/liar.png"])
    assert failures["cat/big.png"][0] == "FileTooLargeError"
    assert "zip bomb" in failures["cat/bomb.png"][1] and str(MAX_COMPRESSION_RATIO) in failures["cat/bomb.png"][1]
    assert "symbolic link" in failures["cat/link.png"][1]
    assert "encrypted" in failures["cat/secret.png"][1]
    assert "escape" in failures["../evil.png"][1] and "escape" in failures["C:/evil4.png"][1]
    assert all(error in ("ArchiveMemberError", "FileTooLargeError") for error, _ in failures.values())
    assert all("\n" not in message for _, message in failures.values())
    data = open_store(store).load()
    assert sorted(p.split("#", 1)[1] for p in data.paths.tolist()) == sorted(f"cat/{p.name}" for p in good)

    # A rerun decodes nothing and records no failure twice; nothing was written outside the store.
    assert _extract(tiny_onnx, archive, store, "--max-file-bytes", "2000000") == 0
    assert len(open_store(store).failures) == len(failures)
    assert _snapshot(tmp_path, tmp_path / "store") == before
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/abs_evil.png").exists()
    assert verify_store(store) == []


def test_zip_member_reads_are_bounded(tmp_path):
    archive = tmp_path / "b.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", b"x" * 5000)
        zf.writestr("bomb.bmp", bytes(MAX_COMPRESSION_RATIO * 2 << 20))
    items = {Path(i.path.split("#")[1]).name: i for i in ZipSource(archive)}
    assert items["a.png"].read() == b"x" * 5000
    with pytest.raises(FileTooLargeError, match="max-file-bytes"):
        items["a.png"].read(4999)
    with pytest.raises(ArchiveMemberError, match="zip bomb"):
        items["bomb.bmp"].read(None)


@pytest.mark.parametrize("content, message", [
    (b"", "zip archive"), (b"PK\x03\x04 not really", "zip archive"),
])
def test_zip_that_is_not_an_archive(tmp_path, content, message):
    path = tmp_path / "x.zip"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=message):
        open_source(path)


def test_zip_without_images(tmp_path):
    archive = tmp_path / "t.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "hello")
        zf.writestr(".hidden.png", "x")
    with pytest.raises(SourceError, match="no images"):
        ZipSource(archive)
    assert os.path.exists(archive)


# -------------------------------------------------------------------------------- WebDataset


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _shard_tree(root: Path, out: Path, per_shard: int) -> list[Path]:
    """``out/<split>/shard-NNNNNN.tar``, samples laid out as webdataset's TarWriter writes them:
    key.cls, key.jpg|png, key.json, key.txt."""
    shards = []
    for split in ("train", "test"):
        files = [p for p in _files(root / split)]
        for s in range(0, len(files), per_shard):
            shard = out / split / f"shard-{s // per_shard:06d}.tar"
            shard.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(shard, "w") as tar:
                for path in files[s: s + per_shard]:
                    label = path.parent.name
                    key = f"{split}/{label}_{path.stem}"
                    _add(tar, f"{key}.cls", str(["cat", "dog"].index(label)).encode())
                    _add(tar, f"{key}{path.suffix}", path.read_bytes())
                    _add(tar, f"{key}.json", json.dumps({"label": label, "w": 40}).encode())
                    _add(tar, f"{key}.txt", f"{label}\n".encode())
            shards.append(shard)
    return shards


def test_brace_patterns():
    assert expand_braces("a-{000..002}.tar") == ["a-000.tar", "a-001.tar", "a-002.tar"]
    assert expand_braces("{x,y}/{8..10}.tar") == ["x/8.tar", "x/9.tar", "x/10.tar", "y/8.tar", "y/9.tar", "y/10.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    with pytest.raises(SourceError, match="neither a range"):
        expand_braces("a-{x}.tar")
    with pytest.raises(SourceError, match="over"):
        expand_braces("{0..9999999}.tar")


def test_webdataset_extracts_bit_equal_to_the_folder(tree, folder_rows, tiny_onnx, tmp_path):
    shards = _shard_tree(tree, tmp_path / "shards", per_shard=70)
    assert len(shards) == 3
    pattern = f"wds:{tmp_path}/shards/{{train,test}}/shard-{{000000..000001}}.tar"
    with pytest.raises(SourceError, match="does not exist"):
        open_source(pattern)
    pattern = f"wds:{tmp_path}/shards/train/shard-{{000000..000001}}.tar"
    source = open_source(pattern, label_from="txt")
    assert isinstance(source, WebDatasetSource) and len(source) == 140 and source.classes == ("cat", "dog")
    first = next(iter(source))
    assert first.path == f"{tmp_path}/shards/train/shard-000000.tar#train/cat_good_000.jpg"
    assert (first.label, first.split) == ("cat", "train")
    assert first.read() == (tree / "train" / "cat" / "good_000.jpg").read_bytes()
    assert [i.label for i in open_source(pattern)][:2] == ["0", "0"]  # cls, the default
    assert {i.label for i in open_source(pattern, label_from="json:label")} == {"cat", "dog"}
    assert {i.label for i in open_source(pattern, label_from="none")} == {None}
    png_only = list(open_source(pattern, image_from="png"))  # the JPEG samples have no png member
    assert {i.path.rsplit(".", 1)[1] for i in png_only if i.label} == {"png"} and len(png_only) == 140
    with pytest.raises(ArchiveMemberError, match=r"no image member \(png\)"):
        next(i for i in png_only if i.label is None).read()

    store = tmp_path / "store"
    for shard in (pattern, shards[2]):  # the test shard given as a plain .tar path, appended to the store
        assert _extract(tiny_onnx, shard, store, "--label-from", "txt") == 0
    _assert_same_rows(_rows(store), folder_rows)
    assert verify_store(store) == []
    assert _extract(tiny_onnx, pattern, store, "--label-from", "txt") == 0
    assert len(open_store(store).keys) == N_IMAGES


def test_webdataset_hostile_members_are_recorded_once_and_never_written(tiny_onnx, tmp_path):
    good = write_good_images(tmp_path / "good", n=4, size=(40, 30), seed=600)
    shard = tmp_path / "work" / "hostile.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        _add(tar, "s0.jpg", good[0].read_bytes())
        _add(tar, "s0.cls", b"1")
        _add(tar, "../evil.jpg", good[1].read_bytes())
        _add(tar, "/tmp/abs_evil.jpg", good[1].read_bytes())
        for kind, name in ((tarfile.SYMTYPE, "link.jpg"), (tarfile.LNKTYPE, "hard.jpg"), (tarfile.CHRTYPE, "dev.jpg")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/passwd"
            tar.addfile(info)
        _add(tar, "s1.png", good[1].read_bytes())
        _add(tar, "s0.jpg", good[2].read_bytes())  # a second member of the same name
        _add(tar, "big.jpg", np.random.default_rng(0).bytes(300_000))
        _add(tar, "text_only.txt", b"no image here")
        _add(tar, "fake.jpg", b"<html>not an image</html>")
        _add(tar, "s2.jpg", good[3].read_bytes())
    whole = shard.read_bytes()
    cut = tmp_path / "work" / "truncated.tar"
    cut.write_bytes(whole[: whole.index(good[3].read_bytes()) + 100])  # cut inside s2.jpg
    before = _snapshot(tmp_path, tmp_path / "store")
    store = tmp_path / "store"
    for _ in range(2):  # the rerun records no failure twice
        for path in (shard, cut):
            assert _extract(tiny_onnx, path, store, "--max-file-bytes", "200000") == 0
    failures = {f["path"].replace(str(tmp_path / "work") + "/", ""): (f["error"], f["message"])
                for f in open_store(store).failures}
    # fake.jpg fails once: in the truncated copy its content is already known to be bad.
    assert sorted(failures) == sorted([
        f"{name}.tar#{member}" for name in ("hostile", "truncated") for member in (
            "../evil.jpg", "/tmp/abs_evil.jpg", "link.jpg", "hard.jpg", "dev.jpg", "s0.jpg", "big.jpg",
            "text_only")] + ["hostile.tar#fake.jpg", "truncated.tar#s2.jpg"])
    assert "came before it" in failures["hostile.tar#s0.jpg"][1]  # the second s0.jpg; the first is a row
    assert "escapes" in failures["hostile.tar#../evil.jpg"][1]
    assert "symbolic link" in failures["hostile.tar#link.jpg"][1] and "device" in failures["hostile.tar#dev.jpg"][1]
    assert failures["hostile.tar#big.jpg"][0] == "FileTooLargeError"
    assert failures["hostile.tar#fake.jpg"][0] == "UnidentifiedImageError"
    assert "no image member" in failures["hostile.tar#text_only"][1]
    assert "cannot be read after member 's2.jpg'" in failures["truncated.tar#s2.jpg"][1]
    assert all("\n" not in message for _, message in failures.values())
    paths = sorted(p.replace(str(tmp_path / "work") + "/", "") for p in open_store(store).paths.tolist())
    assert paths == ["hostile.tar#s0.jpg", "hostile.tar#s1.png", "hostile.tar#s2.jpg"]  # truncated.tar: aliases
    assert _snapshot(tmp_path, store) == before and not Path("/tmp/abs_evil.jpg").exists()
    assert verify_store(store) == []


@pytest.mark.parametrize("label_from", ["json", "cls:x", "a/b", "txt:f"])
def test_webdataset_bad_label_from(tmp_path, label_from):
    shard = tmp_path / "a.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "x.jpg", b"x")
    with pytest.raises(SourceError, match="--label-from"):
        open_source(shard, label_from=label_from)
    with pytest.raises(SourceError, match="apply to WebDataset"):
        open_source(_zip_one(tmp_path), label_from="txt")


def _zip_one(tmp_path: Path) -> Path:
    archive = tmp_path / "one.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.png", b"x")
    return archive


# ---------------------------------------------------------------- Parquet, Arrow, HF datasets

CLASSES = ["cat", "dog"]
HF_FEATURES = {"image": {"decode": True, "_type": "Image"}, "label": {"names": CLASSES, "_type": "ClassLabel"}}


def _hf_table(pa, files: list[Path]):
    """An HF ``Image`` column ({bytes, path}) and a ``ClassLabel`` column, with the features in the metadata."""
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in files], image_type),
        "label": pa.array([CLASSES.index(p.parent.name) for p in files], pa.int64()),
    })
    return table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": HF_FEATURES}})})


def _save_to_disk(pa, tree: Path, out: Path) -> Path:
    """A DatasetDict laid out as ``datasets.save_to_disk`` writes it: dataset_dict.json, and per split
    data-00000-of-00001.arrow (Arrow IPC stream), dataset_info.json and state.json."""
    out.mkdir(parents=True)
    (out / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    for split in ("train", "test"):
        folder = out / split
        folder.mkdir()
        table = _hf_table(pa, _files(tree / split))
        with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
            with pa.ipc.new_stream(sink, table.schema) as writer:
                for batch in table.to_batches(max_chunksize=50):
                    writer.write_batch(batch)
        info = {"builder_name": None, "citation": "", "config_name": None, "dataset_name": None, "dataset_size": None,
                "description": "", "download_checksums": None, "download_size": None, "features": HF_FEATURES,
                "homepage": "", "license": "", "post_processed": None, "post_processing_size": None,
                "size_in_bytes": None, "splits": None, "supervised_keys": None, "version": None}
        (folder / "dataset_info.json").write_text(json.dumps(info, indent=2))
        state = {"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_fingerprint": "0123456789abcdef",
                 "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
                 "_split": split}
        (folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    return out


def test_parquet_hub_layout_extracts_bit_equal_to_the_folder(tree, folder_rows, tiny_onnx, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    for split in ("train", "test"):  # as the Hub lays out a dataset: data/<split>-00000-of-00001.parquet
        path = tmp_path / "hub" / "data" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_hf_table(pa, _files(tree / split)), path, row_group_size=16)
    source = open_source(tmp_path / "hub")
    assert isinstance(source, TableSource) and len(source) == N_IMAGES and source.classes == ("cat", "dog")
    first = next(iter(source))
    assert first.path == f"{tmp_path}/hub/data/test-00000-of-00001.parquet#0"
    assert (first.label, first.split) == ("cat", "test")
    assert first.read() == (tree / "test" / "cat" / "good_000.jpg").read_bytes()
    assert _extract(tiny_onnx, tmp_path / "hub", tmp_path / "store") == 0
    _assert_same_rows(_rows(tmp_path / "store"), folder_rows)
    assert verify_store(tmp_path / "store") == []


def test_parquet_split_column_and_plain_bytes(tree, folder_rows, tiny_onnx, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    files = _files(tree)
    table = pa.table({"jpg": [p.read_bytes() for p in files], "label": [p.parent.name for p in files],
                      "split": [p.parent.parent.name for p in files], "caption": ["x"] * len(files)})
    pq.write_table(table, tmp_path / "all.parquet", row_group_size=7)
    assert _extract(tiny_onnx, tmp_path / "all.parquet", tmp_path / "store") == 0
    _assert_same_rows(_rows(tmp_path / "store"), folder_rows)
    unlabelled = open_source(tmp_path / "all.parquet", label_from="none")
    assert unlabelled.classes == () and {i.label for i in unlabelled} == {None}
    with pytest.raises(SourceError, match="no column 'nope'"):
        open_source(tmp_path / "all.parquet", image_from="nope")


def test_parquet_extra_columns_become_tasks(tree, tiny_onnx, tmp_path, capsys):
    """A table's other columns become tasks, as a CSV image list's do: numbers regression, text
    classification, lists of text multilabel; bytes are left alone; --task-type overrides."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    files = _files(tree)[:24]
    n = len(files)
    table = pa.table({"image": [p.read_bytes() for p in files], "label": [p.parent.name for p in files],
                      "angle": [float(i) - 0.5 if i % 5 else None for i in range(n)],
                      "coarse": ["top" if i % 2 else "shoe" for i in range(n)],
                      "tags": [["a", "b"] if i % 3 else ["c"] for i in range(n)],
                      "count": list(range(n)), "thumb": [b"x"] * n})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=7)
    store = tmp_path / "store"
    assert _extract(tiny_onnx, tmp_path / "t.parquet", store, "--task-type", "nope=regression") == 1
    assert "--task-type names 'nope', not a task column" in capsys.readouterr().err and not store.exists()
    assert _extract(tiny_onnx, tmp_path / "t.parquet", store, "--task-type", "count=classification") == 0
    opened = open_store(store)
    assert opened.tasks == {"label": "classification", "angle": "regression", "coarse": "classification", "tags": "multilabel",
                            "count": "classification"}
    by_path = dict(zip(opened.paths.tolist(), range(len(opened))))
    angle = opened.targets("angle")
    for i in range(n):
        row = by_path[f"{tmp_path / 't.parquet'}#{i}"]
        assert bool(angle.present[row]) == bool(i % 5)
        if i % 5:
            assert angle.y[row] == float(i) - 0.5
    tags = opened.load(task="tags", layers=[])
    assert set(tags.classes) == {"a", "b", "c"} and len(tags) == n
    assert sorted(opened.load(task="count", layers=[]).classes) == sorted(str(i) for i in range(n))
    capsys.readouterr()
    assert _extract(tiny_onnx, tmp_path / "t.parquet", store) == 0  # nothing new: no task value changes
    assert open_store(store).tasks["count"] == "classification"
    assert verify_store(store) == []


def test_save_to_disk_folder_extracts_bit_equal_to_the_folder(tree, folder_rows, tiny_onnx, tmp_path):
    pa = pytest.importorskip("pyarrow")
    saved = _save_to_disk(pa, tree, tmp_path / "saved")
    source = open_source(saved)
    assert isinstance(source, TableSource) and len(source) == N_IMAGES and source.classes == ("cat", "dog")
    assert next(iter(source)).path == f"{saved}/train/data-00000-of-00001.arrow#0"
    assert _extract(tiny_onnx, saved, tmp_path / "store") == 0
    _assert_same_rows(_rows(tmp_path / "store"), folder_rows)
    single = open_source(saved / "test")  # one split's folder is a Dataset of its own
    assert len(single) == 60 and {i.split for i in single} == {"test"}
    assert verify_store(tmp_path / "store") == []


def test_table_hostile_cells_are_recorded_once_and_never_followed(tiny_onnx, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    good = write_good_images(tmp_path / "ds" / "images", n=3, size=(40, 30), seed=700)
    (tmp_path / "secret.png").write_bytes(good[0].read_bytes() + b"outside")
    (tmp_path / "ds" / "escape.png").symlink_to(tmp_path / "secret.png")
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    cells = [
        {"bytes": good[0].read_bytes(), "path": "a.jpg"},  # 0: fine
        {"bytes": None, "path": "images/" + good[1].name},  # 1: inside the dataset folder: read
        {"bytes": None, "path": "../secret.png"},  # 2: escapes
        {"bytes": None, "path": str(tmp_path / "secret.png")},  # 3: absolute
        {"bytes": None, "path": "escape.png"},  # 4: a link leading outside
        {"bytes": b"<html>not an image</html>", "path": None},  # 5: not an image
        {"bytes": None, "path": None},  # 6: nothing
        None,  # 7: null
        {"bytes": good[2].read_bytes(), "path": None},  # 8: label out of range
    ]
    table = pa.table({"image": pa.array(cells, image_type), "label": pa.array([0, 1, 0, 0, 0, 1, 1, 1, 7])})
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": HF_FEATURES}})})
    pq.write_table(table, tmp_path / "ds" / "t.parquet", row_group_size=4)
    store = tmp_path / "store"
    for _ in range(2):
        assert _extract(tiny_onnx, tmp_path / "ds" / "t.parquet", store) == 0
    failures = {int(f["path"].rsplit("#", 1)[1]): (f["error"], f["message"]) for f in open_store(store).failures}
    assert sorted(failures) == [2, 3, 4, 5, 6, 7, 8] and len(open_store(store).failures) == 7  # each once
    assert all("not followed" in failures[row][1] for row in (2, 3, 4))
    assert failures[5][0] == "UnidentifiedImageError"
    assert "not image bytes" in failures[6][1] and "null" in failures[7][1]
    assert "class names" in failures[8][1]
    rows = _rows(store)
    assert len(rows) == 2 and sorted(v[0] for v in rows.values()) == ["cat", "dog"]


def test_table_errors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [b"x"], "b": [b"y"]}), tmp_path / "two.parquet")
    with pytest.raises(SourceError, match="cannot tell the image column"):
        open_source(tmp_path / "two.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(SourceError, match="cannot read"):
        open_source(tmp_path / "bad.parquet")
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "state.json").write_text(json.dumps({"_data_files": [{"filename": "../../etc/passwd"}]}))
    with pytest.raises(SourceError, match="not a file of that folder"):
        open_source(saved)


# ------------------------------------------------------------------------------------ kills

ARCHIVE_KILLS = 3


def _pack(kind: str, folder: Path, out: Path) -> Path:
    files = _files(folder)
    if kind == "zip":
        return _zip_tree(folder, out / "imgs.zip")
    if kind == "wds":
        shard = out / "shard-000000.tar"
        with tarfile.open(shard, "w") as tar:
            for path in files:
                _add(tar, path.name, path.read_bytes())
        return shard
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [p.read_bytes() for p in files]}), out / "imgs.parquet", row_group_size=10)
    return out / "imgs.parquet"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zip", "wds", "parquet"])
def test_sigkill_then_resume_loses_and_duplicates_nothing(kind, tiny_onnx, tmp_path):
    from test_kill import PER_KILL, _command, _committed, _kill_at

    n = 2 * ARCHIVE_KILLS * PER_KILL
    folder = tmp_path / "imgs"
    write_good_images(folder, n=n, size=(96, 72), seed=11)
    source = _pack(kind, folder, tmp_path)
    subprocess.run(_command(tiny_onnx, folder, tmp_path / "reference"), check=True, capture_output=True)
    reference = _rows(tmp_path / "reference")
    store = tmp_path / "killed"
    landed = []
    for i in range(ARCHIVE_KILLS):
        proc = subprocess.Popen(_command(tiny_onnx, source, store), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if _kill_at(proc, store, _committed(store) + 1 + 5 * i, 0.01 * i):
            landed.append(_committed(store))
    assert len(landed) == ARCHIVE_KILLS and _committed(store) < n
    subprocess.run(_command(tiny_onnx, source, store), check=True, capture_output=True)
    assert verify_store(store) == []
    final = _rows(store)  # asserts no key is stored twice
    assert final.keys() == reference.keys()
    for key, (_, _, features) in reference.items():
        np.testing.assert_array_equal(final[key][2], features)
    assert not open_store(store).failures


# ----------------------------------------------------------------------------------- Ray


def _driver_reads(monkeypatch) -> list[str]:
    """Paths of the items read in this process (the driver): Ray workers are other processes."""
    from featurestore.sources import SourceItem

    reads: list[str] = []
    real = SourceItem.read

    def read(self, *args, **kwargs):
        reads.append(self.path)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SourceItem, "read", read)
    return reads


@pytest.mark.distributed
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")
def test_ray_engine_reads_archive_members_as_the_local_engine_does(tree, folder_rows, tiny_onnx, tmp_path,
                                                                   monkeypatch):
    """Zip members are read by the driver and shipped; WebDataset shards and Parquet row groups are
    read, keyed and decoded by the workers: the driver reads no image, and the rows are the folder's."""
    ray = pytest.importorskip("ray")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    from featurestore import ExtractConfig, extract
    from featurestore.distributed import RayOptions, extract_distributed

    archive = _zip_tree(tree, tmp_path / "imgs.zip", prefix="imgs/")
    shards = _shard_tree(tree, tmp_path / "shards", per_shard=100)
    files = _files(tree)
    table = _hf_table(pa, files).append_column("split", pa.array([p.parent.parent.name for p in files]))
    pq.write_table(table, tmp_path / "imgs.parquet", row_group_size=16)
    options = ExtractConfig(batch_size=16, shard_rows=64, device="cpu", progress=False)
    ray_options = RayOptions(workers=2, cpus_per_worker=0.5)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        extract_distributed(tiny_onnx, archive, tmp_path / "zip", options, ray_options)
        reads = _driver_reads(monkeypatch)
        for shard in shards:  # one shard per run: each run adds the new keys to the store
            extract_distributed(tiny_onnx, shard, tmp_path / "wds", replace(options, label_from="txt"), ray_options)
        report = extract_distributed(tiny_onnx, tmp_path / "imgs.parquet", tmp_path / "parquet", options, ray_options)
        assert (report.listed, report.decoded) == (N_IMAGES, N_IMAGES)
        # Again, with the shards appended to the Parquet store: the stored keys are skipped, not re-inferred.
        again = extract_distributed(tiny_onnx, WebDatasetSource(shards, label_from="txt"), tmp_path / "parquet",
                                    options, ray_options)
        assert (again.listed, again.skipped, again.decoded, again.shards) == (200, 200, 0, 0)
        assert reads == []  # no image was read, nor hashed, by the driver
        extract(tiny_onnx, shards[0], tmp_path / "local", replace(options, label_from="txt"))
        assert len(reads) == 100  # the local engine reads each one here: what is counted is what is read
    finally:
        ray.shutdown()
    for store in ("zip", "wds", "parquet"):
        _assert_same_rows(_rows(tmp_path / store), folder_rows)
        assert not open_store(tmp_path / store).failures
        assert verify_store(tmp_path / store) == []


# ------------------------------------------------------------------- routing and pipelines


def test_open_source_routes_each_form(tree, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    assert isinstance(open_source(tree), FolderSource)
    tables = tmp_path / "tables" / "train"
    tables.mkdir(parents=True)
    pq.write_table(pa.table({"image": [b"x"]}), tables / "part-0.parquet")
    assert isinstance(open_source(tmp_path / "tables"), TableSource)
    assert next(iter(open_source(tmp_path / "tables"))).split == "train"
    write_good_images(tmp_path / "tables" / "train", n=1)  # images beside the Parquet file: a folder
    assert isinstance(open_source(tmp_path / "tables"), FolderSource)
    with pytest.raises(SourceError, match="not .csv/.tsv/.zip/.tar/.parquet/.arrow"):
        open_source(_files(tree)[0])
    with pytest.raises(SourceError, match="apply to WebDataset shards and tables"):
        open_source(tree, label_from="txt")


def test_pipeline_extract_step_takes_shards_and_picks_up_an_appended_one(tree, folder_rows, tiny_onnx, tmp_path):
    from featurestore.cli.pipeline import run_pipeline

    shards = _shard_tree(tree, tmp_path / "shards", per_shard=70)
    toml = tmp_path / "p.toml"
    toml.write_text(f'workdir = "{tmp_path / "work"}"\n\n[[extract]]\nname = "s"\nmodel = "{tiny_onnx}"\n'
                    f'sources = ["wds:{tmp_path}/shards/train/shard-{{000000..000001}}.tar"]\ndevice = "cpu"\n'
                    f'label_from = "txt"\nshard_rows = 64\n')
    (step,) = run_pipeline(toml)
    assert step.status == "ran" and "140 rows added" in step.detail
    toml.write_text(toml.read_text().replace('.tar"]', f'.tar", "{shards[2]}"]'))  # a shard appended to the list
    (step,) = run_pipeline(toml)
    assert step.status == "ran" and "60 rows added" in step.detail
    _assert_same_rows(_rows(tmp_path / "work" / "s"), folder_rows)


def test_dot_slash_member_names_are_read(tmp_path):
    """``tar -C dir .`` and some zip tools write ``./name``: harmless, read as ``name``."""
    good = write_good_images(tmp_path / "g", n=2, size=(40, 30))
    shard = tmp_path / "dot.tar"
    with tarfile.open(shard, "w") as tar:
        for i, path in enumerate(good):
            _add(tar, f"./s{i}{path.suffix}", path.read_bytes())
            _add(tar, f"./s{i}.cls", str(i).encode())
    items = list(open_source(shard))
    assert [(i.path.split("#")[1], i.label) for i in items] == [("./s0.jpg", "0"), ("./s1.png", "1")]
    assert items[1].read() == good[1].read_bytes()
    archive = tmp_path / "dot.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in good:
            zf.write(path, f"./cat/{path.name}")
    assert [(i.label, i.read()) for i in open_source(archive)] == [("cat", p.read_bytes()) for p in good]
