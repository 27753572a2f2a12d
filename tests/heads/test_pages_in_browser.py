"""report.html and map.html in a real browser: headless Chromium, with no network, from disk.

Each page is opened once: Chromium runs its script, prints the DOM as it then stands and takes
a screenshot of the first screen, which is kept as an artifact (``runs/test-artifacts/``, or
``$FEATURESTORE_TEST_ARTIFACTS``). The checks are what a user sees: no console message (a
script error or a refused request would print one), the tables and counts in the DOM, the
thumbnails, and pixels of the page's own colours on the first screen.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featurestore.cli import main

from test_report_html import Page, hostile_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(apt-get install chromium); the pages' browser test needs it")
ARTIFACTS = Path(os.environ.get("FEATURESTORE_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "runs" /
                 "test-artifacts")


def open_in_browser(page: Path, screenshot: Path, size: tuple[int, int] = (1280, 900)) -> tuple[str, list[str]]:
    """The DOM after the page's script ran, and the console messages; writes a screenshot of the first screen."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
               f"--user-data-dir={screenshot.parent / 'chromium-profile'}",
               # no network: every request goes to a closed local port, every name fails to resolve
               "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
               f"--window-size={size[0]},{size[1]}", f"--screenshot={screenshot}", "--dump-dom", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / screenshot.name)
    return done.stdout, console


def pixels_of(screenshot: Path, colour: str, tolerance: int = 12, translucent: bool = False) -> int:
    """How many pixels of the screenshot have ``colour`` (``#rrggbb``); with ``translucent``, also
    that colour drawn at half opacity or more over white."""
    rgb = np.asarray(Image.open(screenshot).convert("RGB"), dtype=np.float64).reshape(-1, 3)
    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)
    if not translucent:
        return int((np.abs(rgb - target).max(axis=1) <= tolerance).sum())
    white = np.full(3, 255.0)
    direction = target - white  # pixel = white + alpha * direction
    alpha = (rgb - white) @ direction / (direction @ direction)
    off = np.abs(white + alpha[:, None] * direction - rgb).max(axis=1)
    return int(((alpha >= 0.5) & (alpha <= 1.05) & (off <= tolerance)).sum())


def test_report_html_in_a_browser(tmp_path, capsys):
    store, _ = hostile_store(tmp_path)
    assert main(["bench", str(store), "-o", str(tmp_path / "r"), "--heads", "nb,logreg", "--fusions", "",
                 "--jobs", "1"]) == 0
    capsys.readouterr()
    dom, console = open_in_browser(tmp_path / "r" / "report.html", tmp_path / "report.png")
    assert console == []  # no script error, no refused request
    page = Page(dom)
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    assert len(page.inside("results", "tr")) == 1 + len(doc["results"])
    assert all("sort" in a.get("class", "") for a in page.inside("results", "th"))  # the script ran
    counts = [int(c) for c in re.findall(r'class="count"[^>]*>(\d+)<', dom)]
    assert counts == [v for row in doc["focus"]["confusion"] for v in row]
    thumbs = page.inside("wrong", "img")
    assert thumbs and all(a["src"].startswith("data:image/") for a in thumbs)
    assert "<script>alert(1)</script>" in page.all_text("per-class")  # a class name shown as text
    # the first screen shows the chosen cell's card and its highlighted row in the results table
    shot = tmp_path / "report.png"
    assert pixels_of(shot, "#2a7de1") > 500  # the chosen cell card's border
    assert pixels_of(shot, "#e3efff", tolerance=3) > 5000  # the chosen row


def test_map_html_in_a_browser(tmp_path, capsys):
    store, paths = hostile_store(tmp_path, n=90)
    assert main(["map", str(store), "--layer", "signal", "-o", str(tmp_path / "map.html"), "--method", "pca",
                 "--no-progress"]) == 0
    capsys.readouterr()
    dom, console = open_in_browser(tmp_path / "map.html", tmp_path / "map.png")
    assert console == []
    page = Page(dom)
    assert next(a for tag, a in page.tags if tag == "canvas")["data-points"] == "90"  # drawn by the script
    shown = page.inside("info", "img")  # the first example's thumbnail, until the mouse moves
    assert len(shown) == 1 and shown[0]["src"].startswith("data:image/") and shown[0]["alt"] in paths
    assert len(page.inside("legend", "li")) == 3
    # the points are on the first screen, in the legend's colours (the first three categorical colours)
    for colour in ("#1f77b4", "#ff7f0e", "#2ca02c"):
        assert pixels_of(tmp_path / "map.png", colour, translucent=True) > 300, colour
