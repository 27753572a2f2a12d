"""The CLI stands on the packages' public modules: no ``heads._*`` import, and ``package`` and
``predict`` do not import each other (what both need lives in :mod:`heads`)."""

from __future__ import annotations

from test_layering import ROOT, imports_of, module_name


def _cli_imports() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path.read_text(), module_name(path), path.name == "__init__.py")
            for path in sorted((ROOT / "featurestore" / "cli").rglob("*.py"))}


def test_the_cli_imports_no_private_module_of_heads():
    private = sorted(f"{module} imports {name}" for module, names in _cli_imports().items() for name in names
                     if name.startswith("heads.") and any(part.startswith("_") for part in name.split(".")[1:2]))
    assert private == []


def test_package_and_predict_do_not_import_each_other():
    imports = _cli_imports()
    commands = ("featurestore.cli.package", "featurestore.cli.package_cmd", "featurestore.cli.predict",
                "featurestore.cli.predict_cmd")
    for module in commands:
        other = "predict" if "package" in module else "package"
        assert not [name for name in imports[module] if name.startswith(f"featurestore.cli.{other}")], module
