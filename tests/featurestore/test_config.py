"""Config dataclasses are the one source of CLI flags, help texts, TOML keys and defaults."""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

import pytest

from export import ExportConfig, export_backbone
from featurestore._config import from_arguments, options_of, table_keys
from featurestore.cli import build_parser
from featurestore.cli.pipeline import STEP_KEYS, load_pipeline, run_pipeline, step_keys
from featurestore.errors import PipelineError
from featurestore.extract import ExtractOptions
from featurestore.bench_config import BenchConfig

COMMANDS = {"export": ExportConfig, "extract": ExtractOptions, "bench": BenchConfig}
MINIMAL = {"export": ["resnet18", "-o", "m.onnx"], "extract": ["m.onnx", "imgs", "-o", "s"], "bench": ["s", "-o", "r"]}


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def _flat(text: str) -> str:
    return re.sub(r"\s+", "", text)  # argparse wraps lines, also at hyphens


@pytest.mark.parametrize("command", COMMANDS)
def test_help_texts_and_flags_come_from_the_config(command):
    help_text = _flat(_subparser(command).format_help())
    for field, option, _ in options_of(COMMANDS[command]):
        if option.cli:
            flag = option.flag or (f"--no-{field.name}" if option.kind == "negated" else f"--{field.name}").replace(
                "_", "-")
            assert flag in help_text, (command, flag)
            assert _flat(option.help) in help_text.replace("%%", "%"), (command, field.name)


@pytest.mark.parametrize("command", COMMANDS)
def test_no_flag_given_is_the_config_default(command):
    args = _subparser(command).parse_args(MINIMAL[command])
    assert from_arguments(COMMANDS[command], args) == COMMANDS[command]()


@pytest.mark.parametrize("kind", ["export", "extract", "bench"])
def test_toml_keys_are_the_flags_without_dashes(kind):
    config = COMMANDS[kind]
    flags = {a.dest: a.option_strings for a in _subparser(kind)._actions}
    for key, name in table_keys(config).items():
        spelled = [f.lstrip("-").removeprefix("no-").replace("-", "_") for f in flags.get(name, [])]
        assert key in spelled or not spelled, (kind, key, spelled)
    assert step_keys(kind) == set(STEP_KEYS[kind]) | set(table_keys(config))


def test_pipeline_keys_of_earlier_files_still_hold():
    assert step_keys("export") == {"name", "backbone", "layers", "pool", "weights", "random_init", "precision",
                                   "image_size", "grayscale", "offline", "calibrate", "calibrate_count"}
    assert step_keys("bench") == {"name", "stores", "heads", "fusions", "layers", "per_layer", "cv", "search",
                                  "jobs", "max_train_rows", "seed", "select", "join", "views", "shots", "seeds",
                                  "task"}
    assert step_keys("extract") >= {"name", "model", "sources", "limit", "batch_size", "device", "views", "augment",
                                    "dtype", "shard_rows", "strict", "decode"}


def test_export_defaults_are_export_backbones_own():
    signature = inspect.signature(export_backbone).parameters
    for name, value in ExportConfig().as_keywords().items():
        assert signature[name].default == value, name


def test_unknown_and_mistyped_toml_keys_are_errors(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text('[[export]]\nname = "m"\nbackbone = "pixels"\npooling = "max"\n')
    with pytest.raises(PipelineError, match=r"unknown key\(s\) pooling; did you mean: pool"):
        load_pipeline(toml)
    toml.write_text('[[bench]]\nname = "r"\nstores = ["s"]\nheads = "logreg"\n')
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "manifest.json").write_text("{}")
    with pytest.raises(PipelineError, match="heads must be a list of strings"):
        run_pipeline(toml, workdir=tmp_path)


@pytest.mark.parametrize("name", ["demo.toml", "fashion_mnist.toml", "fashion_mnist_levers.toml"])
def test_the_example_pipelines_load(name):
    """Every key of the shipped pipelines is known and well-typed (they are run by hand, not in CI)."""
    pipeline = load_pipeline(Path(__file__).parents[2] / "examples" / name)
    assert pipeline["export"] and pipeline["extract"] and pipeline["bench"]
