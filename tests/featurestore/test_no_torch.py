"""featurestore/ never imports torch: reading stores and running ONNX files needs none.

One optional module, ``device_decode`` (``extract --decode device``), imports torch inside
its functions, on first use; importing it (or anything else) still loads no torch.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import featurestore

PACKAGE = Path(featurestore.__file__).parent
IMPORTS_TORCH_ON_USE = {"device_decode.py"}


def test_no_torch_import_in_source():
    offenders = [
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
        if path.name not in IMPORTS_TORCH_ON_USE
        and re.search(r"^\s*(import torch|from torch)", path.read_text(), re.MULTILINE)
    ]
    assert offenders == []
    for name in IMPORTS_TORCH_ON_USE:  # only inside functions, never at module level
        assert not re.search(r"^(import torch|from torch)", (PACKAGE / name).read_text(), re.MULTILINE)


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
