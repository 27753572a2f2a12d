"""Crash safety: SIGKILL `featurestore extract` at random moments, rerun, compare with an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featurestore import open_store, verify_store
from featurestore.manifest import MANIFEST_NAME
from images import write_good_images

KILLS = 10
#: A kill lands after the store has gained a random 1..MAX_STEP rows and at a random moment within
#: at most SLACK more rows: the time waited never lets a run get further than that.
MAX_STEP = 12
SLACK = 8
SHARD_ROWS = 4
#: Rows each kill can let through, with a generous allowance for shards committed between the
#: last look at the manifest and the signal; the source holds twice what all kills can consume,
#: so no machine is fast enough to finish it between the kills.
PER_KILL = MAX_STEP + SLACK + 4 * SHARD_ROWS
IMAGES = 2 * KILLS * PER_KILL


def _command(model: Path, folder: Path, store: Path) -> list[str]:
    return [sys.executable, "-m", "featurestore", "extract", str(model), str(folder), "-o", str(store),
            "--device", "cpu", "--batch-size", "4", "--shard-rows", str(SHARD_ROWS), "--workers", "2",
            "--no-progress"]


def _rows(store: Path) -> dict[str, np.ndarray]:
    data = open_store(store).load()
    assert len(set(data.keys.tolist())) == len(data), "a key is stored twice"
    return dict(zip(data.keys.tolist(), data.matrix()))


def _committed(store: Path) -> int:
    try:
        return sum(s["rows"] for s in json.loads((store / MANIFEST_NAME).read_text())["shards"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def _wait(proc: subprocess.Popen, store: Path, rows: int, seconds: float) -> None:
    """Wait until the store holds ``rows`` rows, ``seconds`` have passed or ``proc`` ended."""
    deadline = time.monotonic() + seconds
    while _committed(store) < rows and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)


def _kill_at(proc: subprocess.Popen, store: Path, rows: int, delay: float) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after the store holds ``rows`` rows, or as soon as it
    holds ``rows + SLACK`` (progress, not time, bounds how far a run gets); False if it ended first."""
    _wait(proc, store, rows, 120.0)
    _wait(proc, store, rows + SLACK, delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted_run(tiny_onnx, tmp_path):
    seed = int(os.environ.get("FEATURESTORE_KILL_SEED", "20261129"))
    print(f"kill test seed {seed}")
    rng = random.Random(seed)
    folder = tmp_path / "imgs"
    write_good_images(folder, n=IMAGES, size=(96, 72), seed=3)

    subprocess.run(_command(tiny_onnx, folder, tmp_path / "reference"), check=True, capture_output=True)
    reference = _rows(tmp_path / "reference")
    assert len(reference) == IMAGES

    store = tmp_path / "killed"
    landed = []
    for i in range(KILLS):
        proc = subprocess.Popen(_command(tiny_onnx, folder, store), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        before = _committed(store)
        # The first kills land anywhere in start-up; the others at a random moment after a random
        # number of new rows, i.e. while decoding, inferring, writing a shard or replacing the manifest.
        target = before if i < 2 else before + rng.randint(1, MAX_STEP)
        delay = rng.uniform(0.0, 0.8) if i < 2 else rng.uniform(0.0, 0.05)
        if _kill_at(proc, store, target, delay):
            landed.append(_committed(store))
        if (store / MANIFEST_NAME).exists():  # a kill at any moment leaves a store that opens and verifies
            assert verify_store(store) == []
            for key, value in _rows(store).items():
                np.testing.assert_array_equal(value, reference[key])
    print(f"rows committed at each kill: {landed}")
    assert len(landed) == KILLS, f"only {len(landed)} of {KILLS} kills landed before the run ended"
    assert _committed(store) < IMAGES, "the kills left nothing for the final run to resume"

    subprocess.run(_command(tiny_onnx, folder, store), check=True, capture_output=True)
    assert verify_store(store) == []
    final = _rows(store)
    assert final.keys() == reference.keys()
    for key, value in reference.items():
        np.testing.assert_array_equal(final[key], value)  # bit-equal: ORT CPU ignores batch composition
    assert not [p for p in (store / "shards").iterdir() if p.name.startswith(".")]
