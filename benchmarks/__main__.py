"""Run every benchmark script (each in its own process), then rewrite BENCHMARKS.md.

``python -m benchmarks [--quick] [--repeats N] [--only extract,store] [--results-dir DIR]``
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

from . import OPTIONAL_SCRIPTS, SCRIPTS
from ._common import REPO_ROOT, RESULTS_DIR
from .report import main as report_main


def _available() -> list[str]:
    optional = [name for name in OPTIONAL_SCRIPTS if importlib.util.find_spec(f"benchmarks.{name}") is not None]
    return [*SCRIPTS, *optional]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks the scripts work)")
    parser.add_argument("--repeats", type=int, help="timed repeats per variant (default: each script's)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: temporary directories)")
    parser.add_argument("--only", type=lambda s: s.split(","), help="comma-separated scripts to run")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite BENCHMARKS.md")
    args = parser.parse_args(argv)
    scripts = _available()
    if args.only:
        unknown = [name for name in args.only if name not in scripts]
        if unknown:
            parser.error(f"unknown script(s) {', '.join(unknown)}; available: {', '.join(scripts)}")
        scripts = [name for name in scripts if name in args.only]
    forwarded = ["--results-dir", str(args.results_dir)]
    forwarded += ["--quick"] if args.quick else []
    forwarded += ["--repeats", str(args.repeats)] if args.repeats else []
    forwarded += ["--workdir", str(args.workdir)] if args.workdir else []
    failed = []
    for name in scripts:
        print(f"== benchmarks.{name}", flush=True)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *forwarded], cwd=REPO_ROOT)
        print(f"== benchmarks.{name}: exit {done.returncode} after {time.perf_counter() - started:.0f} s", flush=True)
        if done.returncode:
            failed.append(name)
    if not args.no_report:
        report_main(["--results-dir", str(args.results_dir)])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
