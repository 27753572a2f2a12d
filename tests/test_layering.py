"""The import rule: data flows one way, and only the orchestration layer sees every package.

- ``featurestore`` core (everything but ``featurestore.cli``) imports neither ``export`` nor
  ``heads`` nor ``featurestore.cli``: reading a store needs no exporter, no heads, no torch;
- ``export`` imports ``featurestore`` core only (its spec), never ``heads``;
- ``heads`` consumes features: it reads stores but never runs a model (no onnxruntime
  session, decoding or extraction) and never imports ``export``;
- ``featurestore.cli`` (the CLI, the TOML pipeline runner, predict) alone imports all three.

Imports are read from the source (module level and inside functions alike, relative ones
resolved), so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("featurestore", "export", "heads")
#: Core modules (and the package's re-exports of them) that run a model or decode images:
#: heads must not import them.
MODEL_RUNNERS = ("featurestore.session", "featurestore.decode", "featurestore.device_decode",
                 "featurestore.extract", "featurestore.distributed", "onnxruntime",
                 "featurestore.FeatureModel", "featurestore.decode_image", "featurestore.preprocess_array",
                 "featurestore.ExtractConfig", "featurestore.ExtractReport")
#: The door of `python -m featurestore`: it starts the orchestration layer.
ENTRY_POINTS = ("featurestore.__main__",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` imports, wherever the import statement stands."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def layer_of(module: str) -> str:
    if module in ENTRY_POINTS or module == "featurestore.cli" or module.startswith("featurestore.cli."):
        return "orchestration"
    return module.split(".")[0]


def _is(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(module: str, imported: set[str]) -> list[str]:
    """What ``module`` imports that its layer may not."""
    layer = layer_of(module)
    refused: tuple[str, ...] = ()
    if layer == "featurestore":
        refused = ("export", "heads", "featurestore.cli")
    elif layer == "export":
        refused = ("heads", "featurestore.cli")
    elif layer == "heads":
        refused = ("export", "featurestore.cli", *MODEL_RUNNERS)
    return sorted(f"{module} imports {name}" for name in imported if any(_is(name, r) for r in refused))


def _sources() -> list[tuple[str, Path]]:
    return [(module_name(path), path) for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def test_every_module_imports_only_what_its_layer_may():
    problems = []
    for module, path in _sources():
        problems += violations(module, imports_of(path.read_text(), module, path.name == "__init__.py"))
    assert problems == []


@pytest.mark.parametrize("module, source, expected", [
    ("featurestore.store", "def f():\n    from heads import create_head\n", "featurestore.store imports heads"),
    ("featurestore.extract", "import export.exporter\n", "featurestore.extract imports export.exporter"),
    ("featurestore.writer", "from .cli import main\n", "featurestore.writer imports featurestore.cli"),
    ("heads.bench", "from featurestore.session import FeatureModel\n",
     "heads.bench imports featurestore.session"),
    ("heads.fit", "from export import export_backbone\n", "heads.fit imports export"),
    ("heads.fit", "from featurestore import FeatureModel\n", "heads.fit imports featurestore.FeatureModel"),
    ("export.exporter", "from heads.bench import run_bench\n", "export.exporter imports heads.bench"),
])
def test_the_rule_catches_an_import_across_layers(module, source, expected):
    assert expected in violations(module, imports_of(source, module))


def test_the_orchestration_layer_may_import_everything():
    assert violations("featurestore.cli.pipeline", {"export", "heads.bench", "featurestore.extract"}) == []
