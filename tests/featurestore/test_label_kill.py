"""Crash safety of `featurestore label`: SIGKILL it at random moments tied to its commits, rerun,
and every row carries exactly the final value; the store verifies after every kill."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featurestore import StoreError, open_store, verify_store, write_arrays
from featurestore.journal import read_journal
from featurestore.manifest import Manifest

KILLS = 10
#: A kill lands after the store has gained a random 1..MAX_STEP commits, at a random moment within
#: at most SLACK more commits: the time waited never lets a run get further than that.
MAX_STEP = 12
SLACK = 8
COMMIT_ROWS = 2
#: Values the final table changes or adds: twice what all kills can consume (PER_KILL commits
#: each, generously counted), so no machine is fast enough to finish it between the kills.
PER_KILL = MAX_STEP + SLACK + 4
ROWS = 2 * KILLS * PER_KILL * COMMIT_ROWS
#: The first table values rows [0, FIRST); the final one rows [KEEP, ROWS): rows below KEEP keep
#: the first table's value, rows in [KEEP, FIRST) change, rows from FIRST on are new.
FIRST, KEEP = ROWS // 2, ROWS // 4


def _write_table(path: Path, rows: range, sign: float) -> dict[str, float]:
    values = {f"/img/{i}.png": sign * (i + 0.25) for i in rows}
    path.write_text("path,y\n" + "".join(f"{p},{v!r}\n" for p, v in values.items()), encoding="utf-8")
    return values


def _command(store: Path, table: Path) -> list[str]:
    return [sys.executable, "-m", "featurestore", "label", str(store), str(table), "--commit-rows", str(COMMIT_ROWS)]


def _commits(store: Path) -> int:
    """Commits so far (checkpoint and journal): progress, read as the writer appends."""
    try:
        return Manifest.load(store).seq
    except StoreError:
        return 0


def _wait(proc: subprocess.Popen, store: Path, commits: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while _commits(store) < commits and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)


def _behind_the_watcher() -> None:
    """In the label process: share one CPU with the test and yield it to the test whenever the test
    is runnable (lowest priority). Reading the store's progress gets slower as its journal grows,
    while a commit stays cheap; this way the writer advances only while the watcher sleeps between
    reads, so a kill lands within a commit or two of its target on a fast or a loaded machine alike."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    os.nice(19)


def _kill_at(proc: subprocess.Popen, store: Path, commits: int, delay: float) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after the store has ``commits`` commits, or as soon as it has
    ``commits + SLACK``; False if it ended first."""
    _wait(proc, store, commits, 120.0)
    _wait(proc, store, commits + SLACK, delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def _values(store: Path) -> dict[str, float]:
    data = open_store(store).load(task="y", layers=[])
    assert len(set(data.keys.tolist())) == len(data)
    return dict(zip(data.paths.tolist(), data.y.tolist()))


def _kill_one(i: int, rng: random.Random, store: Path, tmp_path: Path, first: dict, final: dict) -> list[int]:
    """Start `label` with the final table and SIGKILL it at the ``i``-th kill's moment; the commits
    at the kill ([] when the run ended first), after checking the store the kill left."""
    proc = subprocess.Popen(_command(store, tmp_path / "final.csv"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=_behind_the_watcher)
    before = _commits(store)
    # The first kills land anywhere in start-up; the others at a random moment after a random
    # number of new commits: while writing a task file, appending its record, merging or checkpointing.
    target = before if i < 2 else before + rng.randint(1, MAX_STEP)
    delay = rng.uniform(0.0, 0.8) if i < 2 else rng.uniform(0.0, 0.05)
    landed = [_commits(store)] if _kill_at(proc, store, target, delay) else []
    assert verify_store(store) == []  # a kill at any moment leaves a store that opens and verifies
    for path, value in _values(store).items():  # each value is the first table's or the final one
        assert value in (first.get(path), final.get(path)), path
    return landed


@pytest.mark.slow
def test_sigkill_during_label_then_rerun_leaves_exactly_the_final_values(tmp_path):
    seed = int(os.environ.get("FEATURESTORE_KILL_SEED", "20261206"))
    print(f"label kill test seed {seed}")
    rng = random.Random(seed)
    store = tmp_path / "s"
    write_arrays(store, {"f": np.arange(ROWS * 2, dtype=np.float32).reshape(ROWS, 2)},
                 paths=[f"/img/{i}.png" for i in range(ROWS)])
    first = _write_table(tmp_path / "first.csv", range(FIRST), 1.0)
    subprocess.run(_command(store, tmp_path / "first.csv"), check=True, capture_output=True)
    assert _values(store) == first
    final = _write_table(tmp_path / "final.csv", range(KEEP, ROWS), -1.0)
    expected = {**{p: v for p, v in first.items() if p not in final}, **final}

    landed = []
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # the watcher shares its CPU with the label process
    try:
        for i in range(KILLS):
            landed += _kill_one(i, rng, store, tmp_path, first, final)
    finally:
        os.sched_setaffinity(0, cpus)
    print(f"commits at each kill: {landed}")
    assert len(landed) == KILLS, f"only {len(landed)} of {KILLS} kills landed before the run ended"
    assert _values(store) != expected, "the kills left nothing for the final run to finish"

    subprocess.run(_command(store, tmp_path / "final.csv"), check=True, capture_output=True)
    assert verify_store(store) == []
    assert _values(store) == expected
    entry = Manifest.load(store).tasks["y"]
    assert len(entry.parts) == 1 and read_journal(store).records == []
    assert sorted(p.name for p in (store / "tasks").iterdir()) == [Path(entry.parts[0].file).name]
    again = subprocess.run(_command(store, tmp_path / "final.csv"), check=True, capture_output=True, text=True)
    assert "0 commit(s)" in again.stdout  # nothing left to do
