"""featurestore/ never imports torch: reading stores and running ONNX files needs none."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import featurestore

PACKAGE = Path(featurestore.__file__).parent


def test_no_torch_import_in_source():
    offenders = [
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
        if re.search(r"^\s*(import torch|from torch)\b", path.read_text(), re.MULTILINE)
    ]
    assert offenders == []


def test_importing_every_module_and_the_cli_loads_no_torch():
    modules = sorted(
        "featurestore." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
        for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name.removesuffix('.__init__'))\n"
        "from featurestore.cli import build_parser\n"
        "build_parser()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
