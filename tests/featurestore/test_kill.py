"""Crash safety: SIGKILL `featurestore extract` at random moments, rerun, compare with an uninterrupted run."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featurestore import StoreError, open_store, verify_store
from featurestore.journal import JOURNAL_NAME, read_journal
from featurestore.manifest import MANIFEST_NAME, Manifest
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
    """Rows committed (checkpoint and journal), 0 while there is no store yet."""
    try:
        return Manifest.load(store).rows
    except StoreError:
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


#: A writer that commits three shards of 4 rows through the journal and dies without closing
#: (no checkpoint), so the journal holds every commit; ``--skip N`` leaves out the first N rows'
#: worth of work already stored (a rerun adds only what is missing).
_JOURNAL_WRITER = """
import os, sys
import numpy as np
from featurestore.manifest import StoreConfig
from featurestore.spec import LayerSpec, ModelSpec, Preprocessing, WeightsInfo
from featurestore.writer import StoreWriter

spec = ModelSpec(backbone="t", weights=WeightsInfo("none", None, False),
                 layers=(LayerSpec(name="f", output="f", channels=5, dim=5, stride=None, pooling="none"),),
                 preprocessing=Preprocessing(crop_size=(1, 1), resize_mode="exact", mean=(0.0,) * 3, std=(1.0,) * 3))
writer = StoreWriter(sys.argv[1], StoreConfig.from_spec(spec, "0" * 64), spec, shard_rows=4)
rows = np.arange(12 * 5, dtype=np.float32).reshape(12, 5)
todo = [i for i in range(12) if f"{i:064x}" not in writer.stored_keys]
writer.add_rows([f"{i:064x}" for i in todo], [0] * len(todo), ["c"] * len(todo), [None] * len(todo),
                [f"r{i}" for i in todo], {"f": rows[todo]})
if sys.argv[2] == "die":
    os._exit(0)
writer.close(run={"source": "t"})
"""


def _journal_writer(store: Path, mode: str) -> None:
    subprocess.run([sys.executable, "-c", _JOURNAL_WRITER, str(store), mode], check=True)


def test_a_kill_at_any_byte_of_a_commit_append_leaves_a_store_that_opens_and_resumes(tmp_path):
    """Every prefix of the last journal record (what a kill during its append can leave) opens
    with the earlier commits only, verifies, and a rerun completes the store exactly once."""
    store = tmp_path / "s"
    _journal_writer(store, "die")
    journal = (store / JOURNAL_NAME).read_bytes()
    state = read_journal(store)
    assert len(state.records) == 3 and not state.torn and Manifest.load(store).rows == 12
    last = journal.rindex(b"\n", 0, len(journal) - 1) + 1
    full = np.arange(12 * 5, dtype=np.float32).reshape(12, 5)
    for cut in range(last, len(journal)):  # every byte of the append, short of its last
        (store / JOURNAL_NAME).write_bytes(journal[:cut])
        opened = open_store(store)
        assert len(opened) == 8, cut
        np.testing.assert_array_equal(opened.load().X["f"], full[:8])
        assert read_journal(store).torn == (cut > last)
    for cut in (last, last + 1, (last + len(journal)) // 2, len(journal) - 1):
        copy = tmp_path / f"cut-{cut}"
        shutil.copytree(store, copy)
        (copy / JOURNAL_NAME).write_bytes(journal[:cut])
        assert verify_store(copy) == []
        _journal_writer(copy, "close")
        assert verify_store(copy) == []
        done = open_store(copy).load()
        assert sorted(done.keys.tolist()) == [f"{i:064x}" for i in range(12)]
        np.testing.assert_array_equal(done.X["f"][np.argsort(done.keys)], full)
        assert not read_journal(copy).torn and read_journal(copy).records == []
        assert len(list((copy / "shards").iterdir())) == len(Manifest.load(copy).shards) == 3
