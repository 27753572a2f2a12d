"""Errors a caller can catch: every exception the three packages raise is defined in its
package's ``errors.py`` and also subclasses the builtin that fits (``ValueError``,
``KeyError``, ``FileNotFoundError`` ...), never only ``Exception``.

Raise statements are read from the source. Not checked: bare re-raises and instances held
in variables (``raise exc``), ``SystemExit`` in ``__main__`` and argparse's
``ArgumentTypeError`` (its protocol for ``type=`` converters); a class held in a variable
(the errors a Ray worker reports, rebuilt by name) is checked where it is chosen.
"""

from __future__ import annotations

import ast
import builtins
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("featurestore", "export", "heads")
ERROR_MODULES = ("featurestore.errors", "export.errors", "heads.errors")
ALLOWED_BUILTINS = {"SystemExit", "AttributeError"}  # AttributeError: a module's __getattr__ (PEP 562) lacking a name
ALLOWED_OTHERS = {"ArgumentTypeError"}
BUILTIN_ERRORS = {obj for obj in vars(builtins).values() if isinstance(obj, type) and issubclass(obj, BaseException)}


def raised_names(source: str) -> list[tuple[int, str]]:
    """(line, class name) of each ``raise Name(...)`` / ``raise mod.Name(...)`` / ``raise Name``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        name = target.id if isinstance(target, ast.Name) else target.attr if isinstance(target, ast.Attribute) else None
        if name and name[0].isupper():  # classes; lower-case names hold instances or a chosen class
            found.append((node.lineno, name))
    return found


def problem(name: str) -> str | None:
    """Why raising the class called ``name`` breaks the rule, or None."""
    if name in ALLOWED_BUILTINS | ALLOWED_OTHERS:
        return None
    classes = [getattr(importlib.import_module(m), name) for m in ERROR_MODULES
               if isinstance(getattr(importlib.import_module(m), name, None), type)]
    if not classes:
        return f"{name} is not defined in any of {', '.join(ERROR_MODULES)}"
    cls = classes[0]
    if cls.__module__ not in ERROR_MODULES:
        return f"{name} is defined in {cls.__module__}, not in an errors.py"
    if not any(base in BUILTIN_ERRORS and base not in (Exception, BaseException) for base in cls.__mro__):
        return f"{name} subclasses no builtin but Exception"
    return None


def _raises() -> list[tuple[str, int, str]]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            out += [(str(path.relative_to(ROOT)), line, name) for line, name in raised_names(path.read_text())]
    return out


def test_every_raised_error_is_ours_and_a_builtin_too():
    raises = _raises()
    assert len(raises) > 100
    problems = [f"{path}:{line}: {why}" for path, line, name in raises if (why := problem(name))]
    assert problems == []


@pytest.mark.parametrize("source, why", [
    ("raise FeatureStoreError('x')", "FeatureStoreError subclasses no builtin but Exception"),
    ("raise ValueError('x')", "ValueError is not defined in any of"),
    ("raise errors.HeadError('x')", "HeadError subclasses no builtin but Exception"),
])
def test_the_rule_catches_a_bare_base_or_a_builtin(source, why):
    (_, name), = raised_names(source)
    assert why in problem(name)


@pytest.mark.parametrize("module", ERROR_MODULES)
def test_every_error_class_is_a_builtin_too_except_the_bases(module):
    errors = importlib.import_module(module)
    bases = {"FeatureStoreError", "ExportError", "HeadError"}
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and name not in bases:
            assert problem(name) is None, problem(name)
