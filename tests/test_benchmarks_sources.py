"""The sources benchmark runs on a few JPEGs packed as every source and writes its tables.

No rate or memory figure is asserted: on so few images the numbers mean nothing.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("skimage", reason="the benchmark writes JPEGs of scikit-image's photos")
pytest.importorskip("pyarrow", reason="the benchmark writes Parquet and Arrow files")


def test_every_source_extracts_every_image(tmp_path, benchmark_cache):
    from benchmarks import sources

    argv = ["--quick", "--repeats", "1", "--results-dir", str(tmp_path / "results"), "--workdir",
            str(tmp_path / "work"), "--cache-dir", str(benchmark_cache), "--images", "8", "--rss-mib", "0",
            "--sizes", "160x120"]
    assert sources.main(argv) == 0
    assert not list((tmp_path / "work").iterdir())  # the scratch files are removed
    document = json.loads((tmp_path / "results" / "sources.json").read_text())
    assert list(document["variants"]) == list(sources.VARIANTS)
    assert all(v["work"] == 8 for v in document["variants"].values())  # each run checked 8 rows, no failure
    assert set(document["rss"]) == {"file", "one_row_group", "read", "extract", "extract, 1 row group"}
    assert document["rss"]["read"]["items"] == document["rss"]["file"]["rows"] == 100
    assert document["rss"]["extract, 1 row group"]["items"] == 100
    speed, memory = document["tables"]
    assert len(speed["rows"]) == 5 and len(memory["rows"]) == 3
