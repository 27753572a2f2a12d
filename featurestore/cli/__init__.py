"""The orchestration layer: the ``featurestore`` command, the TOML pipeline runner and predict.

It alone imports the core (``featurestore``), ``export`` and ``heads`` (``tests/test_layering.py``
enforces it). One module per subcommand, each with ``add_parser`` and ``run``;
:mod:`.pipeline` runs ``featurestore run`` files and :mod:`.predict` classifies new images.
``main(argv)`` is callable from tests and returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from ..cpu import Int8KernelWarning
from ..errors import FeatureStoreError

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

#: subcommand name -> module (relative to this package) defining ``add_parser`` and ``run``.
SUBCOMMANDS = {
    "export": "export_cmd",
    "layers": "layers_cmd",
    "fetch": "fetch_cmd",
    "classify": "classify_cmd",
    "extract": "extract_cmd",
    "info": "info_cmd",
    "label": "label_cmd",
    "verify": "verify_cmd",
    "migrate": "migrate_cmd",
    "repair": "repair_cmd",
    "bench": "bench_cmd",
    "map": "map_cmd",
    "fit": "fit_cmd",
    "predict": "predict_cmd",
    "package": "package_cmd",
    "run": "run_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (subcommand modules import their heavy dependencies lazily)."""
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="featurestore",
        description="Export backbones to ONNX, extract features into crash-safe stores, iterate on heads.",
    )
    parser.add_argument("--version", action="version", version=f"featurestore {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(f"{__name__}.{module_name}")
        sub = module.add_parser(subparsers, name)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 success, 1 failure reported, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if callable(getattr(sys.stdout, "reconfigure", None)):  # a file name that is not UTF-8 prints as its bytes
        sys.stdout.reconfigure(errors="surrogateescape")
    show = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, Int8KernelWarning):  # a user-facing warning: one line, no source location
            print(f"featurestore {args.command}: WARNING: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line
    try:
        return int(args._run(args) or 0)
    except (FeatureStoreError, OSError) as exc:  # bad input, or a file the system refuses: one line
        print(f"featurestore {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"featurestore {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show
