"""The state of one ``benchmarks.gpu`` run: its results document, time budget and watchdog.

A GPU machine may be lent for minutes only, so the document is rewritten after every step,
what has not started when the budget is spent is recorded as skipped, and a watchdog saves
and ends the process when a step hangs past budget + grace.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ._common import repeats_for, write_result
from ._gpu_report import tables, targets

__all__ = ["NAME", "Run", "describe"]

NAME = "gpu"


def describe(exc: BaseException) -> str:
    """``Type: message``, at most 600 characters, for the results document."""
    return f"{type(exc).__name__}: {exc}".strip()[:600]


class Run:
    """The results document of one run: saved after every step, with the time budget and a watchdog."""

    def __init__(self, args: argparse.Namespace, machine: dict[str, Any], document: dict[str, Any]) -> None:
        self.args, self.machine, self.doc = args, machine, document
        self.started = time.monotonic()
        self.lock = threading.RLock()
        self._watchdog: threading.Timer | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def over_budget(self) -> bool:
        return self.elapsed() > self.args.time_budget

    def log(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {message}", file=sys.stderr, flush=True)

    def add(self, key: str, item: Any) -> None:
        with self.lock:
            self.doc[key].append(item)
            self.save()

    def note(self, text: str) -> None:
        self.log(text)
        self.add("notes", text)

    def save(self) -> Path:
        with self.lock:
            self.doc["elapsed_s"] = round(self.elapsed(), 1)
            self.doc["tables"] = tables(self.doc, repeats_for(self.args))
            self.doc["targets"] = targets(self.doc)
            return write_result(self.args, NAME, self.doc, self.machine)

    def start_watchdog(self) -> None:
        self._watchdog = threading.Timer(self.args.time_budget + self.args.grace, self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _expire(self) -> None:
        """Save what was measured and end the process: a step has hung past budget + grace."""
        self.log(f"watchdog: still running after {self.elapsed():.0f} s; saving and exiting")
        if self.lock.acquire(timeout=30):
            try:
                self.doc["status"] = "stopped"
                self.doc["notes"].append(f"stopped by the watchdog after {self.elapsed():.0f} s (time budget "
                                         f"{self.args.time_budget:g} s + grace {self.args.grace:g} s)")
                self.save()
            except Exception as exc:  # exiting matters more than this last save
                self.log(f"watchdog: could not save: {describe(exc)}")
        os._exit(3)
