"""Config dataclasses as the one source of CLI flags, TOML keys, defaults and help texts.

A config is a frozen dataclass whose fields are declared with :func:`option`: the field's
default, its help text and how it is spelled on the command line. From it,
:func:`add_arguments` adds the flags to an ``argparse`` parser, :func:`from_arguments`
builds the config from parsed flags, and :func:`from_table` builds it from a TOML table,
refusing unknown keys with the closest valid ones. A TOML key is the flag without its
dashes (``--shard-rows`` -> ``shard_rows``), so the two never drift apart. A field renamed keeps
its old spelling as an alias (``aliases``): the old flag, and the old flag without dashes as a
TOML key, still set it.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._hints import close_matches_hint
from .errors import OptionsError, PipelineError

__all__ = ["Option", "option", "options_of", "add_arguments", "from_arguments", "from_table", "table_keys",
           "alias_keys", "canonical_table"]

#: How a field is spelled on the command line.
KINDS = ("value", "list", "switch", "negated", "tristate", "repeat")


@dataclass(frozen=True)
class Option:
    """How one config field appears on the command line and in TOML.

    Parameters
    ----------
    help : str
        Help text (``%(default)s`` is filled in by argparse).
    flag : str, optional
        The flag (default: ``--field-name``); ``negated`` switches default to ``--no-field-name``.
    kind : {'value', 'list', 'switch', 'negated', 'tristate'}
        ``list``: comma-separated on the command line, an array in TOML; ``switch``: a flag that
        sets True; ``negated``: a ``--no-...`` flag that sets False; ``tristate``: ``auto|on|off``
        for None/True/False; ``repeat``: a flag given once per value (``--param a=1 --param b=2``),
        an array in TOML.
    choices : tuple, optional
    cli, toml : bool
        Whether the field is a flag / a TOML key at all.
    aliases : tuple of str, default=()
        Former flags of the field, still accepted; each without its dashes is a former TOML key.
    required : bool, default=False
        The flag must be given (a command's main choice, e.g. ``fit --head``).
    """

    help: str
    flag: str | None = None
    kind: str = "value"
    choices: tuple[Any, ...] | None = None
    cli: bool = True
    toml: bool = True
    aliases: tuple[str, ...] = ()
    required: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise OptionsError(f"Option kind {self.kind!r} is not one of {KINDS}")


def option(default: Any, help: str, **spelling: Any) -> Any:
    """A dataclass field with its :class:`Option` (``flag``, ``kind``, ``choices``, ``cli``, ``toml``)."""
    return field(default=default, metadata={"option": Option(help, **spelling)})


def options_of(cls: type) -> list[tuple[dataclasses.Field, Option, Any]]:
    """(field, option, type) of every field of ``cls`` declared with :func:`option`."""
    hints = typing.get_type_hints(cls)
    return [(f, f.metadata["option"], hints[f.name]) for f in dataclasses.fields(cls) if "option" in f.metadata]


def _flag(f: dataclasses.Field, opt: Option) -> str:
    if opt.flag:
        return opt.flag
    name = f.name.replace("_", "-")
    return f"--no-{name}" if opt.kind == "negated" else f"--{name}"


def _key(f: dataclasses.Field, opt: Option, flag: str | None = None) -> str:
    flag = (flag or _flag(f, opt)).lstrip("-")
    return (flag.removeprefix("no-") if opt.kind == "negated" else flag).replace("-", "_")


def _scalar(annotation: Any) -> type:
    """The scalar type behind ``int``, ``int | None``, ``tuple[str, ...]`` ..."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (tuple, list):
        return args[0] if args else str
    if args:
        return _scalar(args[0])
    return annotation


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def add_arguments(parser: argparse.ArgumentParser | Any, cls: type, *,
                  exclusive: Iterable[tuple[str, ...]] = ()) -> None:
    """Add a flag per field of ``cls`` (``dest`` is the field name); ``exclusive`` groups fields
    that may not be given together."""
    groups: dict[str, Any] = {}
    for names in exclusive:
        group = parser.add_mutually_exclusive_group()
        groups.update({name: group for name in names})
    for f, opt, annotation in options_of(cls):
        if not opt.cli:
            continue
        target = groups.get(f.name, parser)
        flag = _flag(f, opt)
        flags = (flag, *opt.aliases)
        metavar = flag.lstrip("-").upper().replace("-", "_")
        if opt.kind == "switch":
            target.add_argument(*flags, dest=f.name, action="store_true", help=opt.help)
        elif opt.kind == "negated":
            target.add_argument(*flags, dest=f.name, action="store_false", help=opt.help)
        elif opt.kind == "tristate":
            target.add_argument(*flags, dest=f.name, choices=("auto", "on", "off"), default="auto", help=opt.help)
        elif opt.kind == "list":
            shown = f" (default: {','.join(f.default)})" if f.default else ""
            target.add_argument(*flags, dest=f.name, type=_comma_list, default=f.default, metavar=metavar,
                                help=opt.help + shown)
        elif opt.kind == "repeat":  # None, not (): argparse appends to a copy of the default
            target.add_argument(*flags, dest=f.name, action="append", default=None, metavar=metavar,
                                required=opt.required, help=opt.help)
        else:
            target.add_argument(*flags, dest=f.name, type=_scalar(annotation), default=f.default,
                                choices=opt.choices, metavar=None if opt.choices else metavar,
                                required=opt.required, help=opt.help)


def from_arguments(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The config of parsed flags (fields without a flag keep their defaults unless overridden)."""
    values = {}
    for f, opt, _ in options_of(cls):
        if opt.cli and hasattr(args, f.name):
            value = getattr(args, f.name)
            if opt.kind == "tristate":
                value = {"auto": None, "on": True, "off": False}[value]
            elif opt.kind == "repeat":
                value = f.default if value is None else tuple(value)
            values[f.name] = value
    return cls(**{**values, **overrides})


def table_keys(cls: type) -> dict[str, str]:
    """TOML key -> field name, for every field that has a TOML key (its present spelling)."""
    return {_key(f, opt): f.name for f, opt, _ in options_of(cls) if opt.toml}


def alias_keys(cls: type) -> dict[str, str]:
    """Former TOML key -> its present key, for every field renamed (see :class:`Option` ``aliases``)."""
    return {_key(f, opt, alias): _key(f, opt) for f, opt, _ in options_of(cls) if opt.toml for alias in opt.aliases}


def canonical_table(cls: type, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``table`` with each former key under its present name.

    Raises
    ------
    PipelineError
        A field given under both its former and its present key.
    """
    out = dict(table)
    for old, new in alias_keys(cls).items():
        if old in out:
            if new in out:
                raise PipelineError(f"{where}: {old!r} is the former name of {new!r}; give only {new!r}")
            out[new] = out.pop(old)
    return out


def from_table(cls: type, table: Mapping[str, Any], where: str, *, own_keys: Iterable[str] = (),
               **overrides: Any) -> Any:
    """The config of a TOML table; keys in ``own_keys`` belong to the caller and are skipped.

    Raises
    ------
    PipelineError
        A key that is neither a field's nor the caller's, with the closest valid keys; a field
        given under both its former and its present key.
    """
    table = canonical_table(cls, table, where)
    keys = table_keys(cls)
    own = set(own_keys)
    unknown = [key for key in table if key not in keys and key not in own]
    if unknown:
        valid = sorted(own | set(keys))
        raise PipelineError(f"{where}: unknown key {unknown[0]!r}; {close_matches_hint(unknown[0], valid)}; "
                            f"allowed: {', '.join(valid)}")
    values = {}
    spelled = {f.name: (opt, annotation) for f, opt, annotation in options_of(cls)}
    for key, name in keys.items():
        if key in table:
            opt, annotation = spelled[name]
            values[name] = _checked(table[key], opt, annotation, f"{where}: {key}")
    return cls(**{**values, **overrides})


def _checked(value: Any, opt: Option, annotation: Any, where: str) -> Any:
    """A TOML value of the field's type (lists become tuples), else a PipelineError."""
    expected = _scalar(annotation)
    optional = type(None) in typing.get_args(annotation)
    if value is None and optional:
        return None
    if opt.kind in ("list", "repeat"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PipelineError(f"{where} must be a list of strings, got {value!r}")
        return tuple(value)
    fits = {bool: lambda v: isinstance(v, bool), int: lambda v: isinstance(v, int) and not isinstance(v, bool),
            float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}.get(
        expected, lambda v: isinstance(v, str))
    if not fits(value):
        raise PipelineError(f"{where} must be a {getattr(expected, '__name__', expected)}, got {value!r}")
    if opt.choices and value not in opt.choices:
        raise PipelineError(f"{where} must be one of {', '.join(map(str, opt.choices))}, got {value!r}")
    return value
