"""report.html: one self-contained page per bench, safe with whatever names and paths a store holds."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

from featurestore import write_arrays
from featurestore.cli import main

HOSTILE = ["<script>alert(1)</script>", 'b"><img src=x onerror=alert(2)>', "c & d"]


def hostile_store(root: Path, n: int = 240) -> tuple[Path, list[str]]:
    """A store of 3 classes with hostile class names, whose rows' paths are PNG files (every 8th deleted)."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    signal = rng.normal(size=(3, 8))[y]
    (root / "img").mkdir(parents=True)
    paths = []
    for i in range(n):
        path = root / "img" / f"{i}<b>'.png"
        Image.new("RGB", (40, 30), [(200, 60, 60), (60, 200, 60), (60, 60, 200)][y[i]]).save(path)
        paths.append(str(path))
    for path in paths[::8]:
        Path(path).unlink()
    features = {"noise": rng.normal(size=(n, 6)).astype(np.float32),
                "signal": (signal + rng.normal(size=(n, 8))).astype(np.float32)}
    write_arrays(root / "s", features, labels=[HOSTILE[v] for v in y], paths=paths,
                 splits=np.where(np.arange(n) % 4 == 0, "test", "train"))
    return root / "s", paths


class Page(HTMLParser):
    """The parts of a page a test looks at: elements by id, tags, attributes, text per element id."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.within: list[set[str]] = []  # per tag, the ids of the elements it lies in
        self.text: dict[str, list[str]] = {}
        self._open: list[str | None] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        self.within.append({element for element in self._open if element})
        if tag not in ("img", "meta", "br", "rect", "circle", "line", "polyline"):
            self._open.append(attributes.get("id"))

    def handle_endtag(self, tag):
        if tag not in ("img", "meta", "br", "rect", "circle", "line", "polyline") and self._open:
            self._open.pop()

    def handle_data(self, data):
        for element in self._open:
            if element:
                self.text.setdefault(element, []).append(data)

    def inside(self, element: str, tag: str) -> list[dict[str, str]]:
        """The attributes of every ``tag`` inside the element whose id is ``element``."""
        return [a for (t, a), ids in zip(self.tags, self.within) if t == tag and element in ids]

    def all_text(self, element: str) -> str:
        return " ".join(self.text.get(element, []))


def test_report_html_is_self_contained_and_escapes_what_the_store_says(tmp_path, capsys):
    store, paths = hostile_store(tmp_path)
    assert main(["bench", str(store), "-o", str(tmp_path / "r"), "--heads", "nb,logreg", "--fusions", "",
                 "--jobs", "1"]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("store"))
    assert "test accuracy" in header and "cv accuracy" not in header  # scored on the test split
    out = tmp_path / "r"
    assert (out / "report.md").is_file() and (out / "confusion_best.png").is_file()
    text = (out / "report.html").read_text()
    page = Page(text)
    # nothing from elsewhere: every image inline, no stylesheet or script file, a policy that forbids any fetch
    assert all(a["src"].startswith("data:image/") for tag, a in page.tags if "src" in a)
    assert not any(tag in ("link", "iframe", "object", "embed") for tag, _ in page.tags)
    policy = next(a["content"] for tag, a in page.tags if tag == "meta" and a.get("http-equiv"))
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy
    assert [a for tag, a in page.tags if tag == "script"] == [{}]  # the page's own script, nothing a store wrote
    for name in HOSTILE:  # class names come back as text, never as markup
        assert name in page.all_text("per-class")
    assert "<script>alert" not in text and "<img src=x" not in text

    doc = json.loads((out / "results.json").read_text())
    focus = doc["focus"]
    assert (focus["store"], focus["layer"]) == ("s", "signal")
    rows = page.inside("results", "tr")
    assert len(rows) == 1 + len(doc["results"])  # the header, then a row per cell
    assert sum(a.get("class") == "pick" for a in rows) == 1
    counts = re.findall(r'class="count">(\d+)<', text)
    assert [int(c) for c in counts] == [v for row in focus["confusion"] for v in row]
    assert "test accuracy" in page.all_text("results")
    # the wrong rows: thumbnails of the images still on disk, the deleted ones counted
    wrong = focus["wrong"]
    gone = sum(not Path(w["path"]).exists() for w in wrong)
    assert len(wrong) == focus["wrong_total"] > 0
    cards = [a for tag, a in page.tags if tag == "img"]
    assert len(cards) == len(wrong) - gone
    assert all(a["alt"] in paths for a in cards)
    assert gone and f"{gone} no longer on disk" in page.all_text("wrong-note")
    confidences = [w["confidence"] for w in wrong]
    assert confidences == sorted(confidences, reverse=True)


def test_report_html_under_select_names_cv_and_test_accuracy(tmp_path, capsys):
    store, _ = hostile_store(tmp_path)
    assert main(["bench", str(store), "-o", str(tmp_path / "r"), "--heads", "nb", "--fusions", "", "--select",
                 "--cv", "3", "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    page = Page((tmp_path / "r" / "report.html").read_text())
    chosen = page.all_text("chosen")
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    selection = doc["selection"]
    assert f"CV accuracy {selection['cv_accuracy']:.4f}" in chosen
    assert f"test accuracy {selection['test_accuracy']:.4f}" in chosen and "--select" in chosen
    assert "CV accuracy" in page.all_text("results") and "test accuracy" not in page.all_text("results")
    # the confusion matrix is the chosen cell's on the test split, not its CV folds'
    assert sum(map(sum, doc["focus"]["confusion"])) == selection["n_test"] == 60
    # the terminal table names its columns as honestly: CV scores, and the chosen cell's test score
    lines = printed.splitlines()
    header = next(line for line in lines if line.startswith("store"))
    assert "cv accuracy" in header and "test accuracy" in header and " accuracy " not in header.replace(
        "cv accuracy", "").replace("test accuracy", "")
    picked = [line for line in lines if line.endswith("<- chosen")]
    assert len(picked) == 1 and f"{selection['test_accuracy']:.4f}" in picked[0]
