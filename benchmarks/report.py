"""Rewrite BENCHMARKS.md from whatever results JSON files exist.

``python -m benchmarks.report [--results-dir benchmarks/results] [--output BENCHMARKS.md]``

Lists every target of :data:`benchmarks.targets.TARGETS` (measured or not) with the measured
ratio, PASS/MISS and notes: the note the script wrote into its JSON, then the note kept by hand
in ``benchmarks/notes.toml`` under the target's id. Then one section per results file with its
parameters and tables.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._common import PACKAGE_DIR, REPO_ROOT, RESULTS_DIR, parse_args
from .targets import TARGETS, Target

__all__ = ["load_results", "load_notes", "main", "render"]

NOTES_FILE = PACKAGE_DIR / "notes.toml"
ORDER = ("ceiling", "extract", "store", "store_scale", "heads", "head_fit", "head_fit_regression", "head_fit_multilabel", "map", "quant", "distributed", "gpu")


def load_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Every ``<name>.json`` in ``results_dir``, by benchmark name (unreadable files are skipped with a note)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(results_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            out[path.stem] = {"benchmark": path.stem, "error": f"cannot read {path.name}: {exc}"}
            continue
        out[doc.get("benchmark", path.stem)] = doc
    return out


def load_notes(path: Path = NOTES_FILE) -> dict[str, str]:
    """Hand-kept notes by target id: ``["id"]`` tables with ``note = "..."``, or ``"id" = "..."``."""
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    out = {}
    for key, value in data.items():
        text = value.get("note", "") if isinstance(value, dict) else str(value)
        if text.strip():
            out[key] = " ".join(text.split())
    return out


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _value(target: Target, value: float) -> str:
    if target.unit == "x":
        return f"{value:.2f}x"
    if target.unit == "%":
        return f"{value:+.1f}%"
    if target.unit == "cosine":
        return f"{value:.6f}"
    if target.unit == "s":
        return f"{value:.0f} s"
    return f"{value:.2f} points"


def _target_row(target: Target, results: dict[str, dict[str, Any]], notes: dict[str, str]) -> list[str]:
    doc = results.get(target.benchmark)
    entry = next((t for t in (doc or {}).get("targets", []) if t["id"] == target.id), None)
    hand = notes.get(target.id, "")
    if entry is None:
        why = ("not measured: benchmarks/%s.py has not written results" % target.benchmark if doc is None
               else "not measured in this run (backbone or case not selected)")
        return [target.id, target.goal, target.describe(), "-", "-", "n/a", " ".join(filter(None, [why, hand]))]
    low_high = entry.get("paired_range")
    spread = f"{_value(target, low_high[0])} .. {_value(target, low_high[1])}" if low_high else "-"
    verdict = "PASS" if entry["passed"] else "MISS"
    busy = entry.get("machine_busy", doc.get("machine_busy"))  # a target spliced in from a rerun carries its own
    flags = [f for f, on in (("quick mode", doc.get("quick")), ("busy machine", busy)) if on]
    if flags:
        verdict += f" ({', '.join(flags)})"
    note = " ".join(filter(None, [entry.get("note", ""), hand]))
    return [target.id, target.goal, target.describe(), _value(target, entry["measured"]), spread, verdict, note]


def _machine_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name in _ordered(results):
        m = results[name].get("machine")
        if not m:
            continue
        cpu, v = m["cpu"], m["versions"]
        libs = ", ".join(f"{k} {v[k]}" for k in ("onnxruntime-gpu", "onnxruntime", "torch", "numpy", "numpy_blas",
                                                  "h5py", "onnx") if k in v)
        load = f"load average {m['loadavg_start'][0]:.1f} -> {m.get('loadavg_end', [float('nan')])[0]:.1f}"
        lines.append(f"- `{name}` ({results[name]['created']}{', quick mode' if results[name].get('quick') else ''}): "
                     f"{cpu['model']}, {cpu['usable_cores']} cores ({' '.join(cpu['flags'])}), {m['memory_gib']} GiB; "
                     f"{load}; {libs}; git {str(m['git'].get('commit'))[:10]}"
                     f"{' (dirty)' if m['git'].get('dirty') else ''}")
    return lines


def _ordered(results: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(results, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def _section(name: str, doc: dict[str, Any]) -> list[str]:
    lines = [f"## {name}", ""]
    if "error" in doc:
        return lines + [doc["error"], ""]
    quick = ", **quick mode: sizes too small to judge**" if doc.get("quick") else ""
    busy = ", **machine busy (load above the core count): ratios are noisy**" if doc.get("machine_busy") else ""
    lines += [f"`{' '.join(doc.get('command') or [])}`: {doc.get('created')}, {doc.get('repeats')} repeats"
              f"{quick}{busy}.",
              "", f"Parameters: `{json.dumps(doc.get('parameters', {}), sort_keys=True)}`", ""]
    for tab in doc.get("tables", []):
        lines += [f"**{tab['title']}**", "", *_md_table(tab["headers"], tab["rows"]), ""]
    lines += [f"- {note}" for note in doc.get("notes", [])]
    return lines + ([""] if doc.get("notes") else [])


def render(results: dict[str, dict[str, Any]], notes: dict[str, str]) -> str:
    """The whole BENCHMARKS.md text."""
    lines = [
        "# Benchmarks", "",
        "Generated by `python -m benchmarks.report` from `benchmarks/results/*.json`; do not edit by hand "
        "(hand-kept notes go in `benchmarks/notes.toml`, keyed by target id). Every figure is a ratio of "
        "variants measured in the same run, interleaved and repeated; medians, with the lowest and highest "
        "per-repeat ratio. Run everything with `python -m benchmarks` (or one script: "
        "`python -m benchmarks.extract`, ...; `--quick` only checks that a script works).", "",
        "## Machine", "", *(_machine_lines(results) or ["No results yet."]), "",
        "## Targets", "",
        *_md_table(["id", "goal", "target", "measured", "per-repeat range", "result", "notes"],
                   [_target_row(t, results, notes) for t in TARGETS]), "",
    ]
    for name in _ordered(results):
        lines += _section(name, results[name])
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--notes", type=Path, default=NOTES_FILE, help="hand-kept notes (TOML, by target id)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    args = parse_args(parser, argv)
    text = render(load_results(args.results_dir), load_notes(args.notes))
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    tmp.write_text(text)
    tmp.replace(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
