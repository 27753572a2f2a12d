"""Config dataclasses are the one source of CLI flags, help texts, TOML keys and defaults."""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

import pytest

from export import ExportConfig, export_backbone
from featurestore._config import alias_keys, from_arguments, from_table, options_of, table_keys
from featurestore.cli import build_parser
from featurestore.cli.pipeline import STEP_KEYS, load_pipeline, run_pipeline, step_keys
from featurestore.errors import PipelineError
from featurestore.extract import ExtractConfig
from featurestore.bench_config import BenchConfig
from featurestore.head_config import ClassifyConfig, FitConfig, PackageConfig, PredictConfig

COMMANDS = {"export": ExportConfig, "extract": ExtractConfig, "bench": BenchConfig}
MINIMAL = {"export": ["resnet18", "-o", "m.onnx"], "extract": ["m.onnx", "imgs", "-o", "s"], "bench": ["s", "-o", "r"]}
#: The commands without a pipeline step: their config, their fewest arguments, what those set.
HEAD_COMMANDS = {"fit": (FitConfig, ["s", "--head", "nb", "-o", "h.skops"], {"head": "nb"}),
                 "predict": (PredictConfig, ["m.onnx", "h.skops", "imgs", "-o", "p.csv"], {}),
                 "package": (PackageConfig, ["m.onnx", "h.skops", "-o", "c.onnx"], {}),
                 "classify": (ClassifyConfig, ["m.onnx", "a.png"], {})}


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def _flat(text: str) -> str:
    return re.sub(r"\s+", "", text)  # argparse wraps lines, also at hyphens


@pytest.mark.parametrize("command", list(COMMANDS) + list(HEAD_COMMANDS))
def test_help_texts_and_flags_come_from_the_config(command):
    help_text = _flat(_subparser(command).format_help())
    config = COMMANDS[command] if command in COMMANDS else HEAD_COMMANDS[command][0]
    for field, option, _ in options_of(config):
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
    assert step_keys(kind) == set(STEP_KEYS[kind]) | set(table_keys(config)) | set(alias_keys(config))


def test_pipeline_keys_of_earlier_files_still_hold():
    assert step_keys("export") >= {"name", "backbone", "layers", "pool", "weights", "random_init", "precision",
                                   "image_size", "grayscale", "offline", "calibrate", "calibrate_count"}
    assert step_keys("bench") == {"name", "stores", "heads", "fusions", "layers", "per_layer", "cv", "search",
                                  "jobs", "max_train_rows", "seed", "select", "join", "views", "shots", "seeds",
                                  "task"}
    assert step_keys("extract") >= {"name", "model", "sources", "limit", "batch_size", "device", "views", "augment",
                                    "dtype", "shard_rows", "strict", "decode", "workers"}


def test_export_defaults_are_export_backbones_own():
    signature = inspect.signature(export_backbone).parameters
    for name, value in ExportConfig().as_keywords().items():
        assert signature[name].default == value, name


def test_unknown_and_mistyped_toml_keys_are_errors(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text('[[export]]\nname = "m"\nbackbone = "pixels"\npoolng = "max"\n')
    with pytest.raises(PipelineError, match=r"unknown key\(s\) poolng; did you mean: .*pooling"):
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


#: Fields renamed, by command: (present flag, former flag, a value) -- each spelling sets the same field.
RENAMED = {"export": ("pooling", "--pooling", "--pool", "max"),
           "extract": ("decode_workers", "--decode-workers", "--workers", "3")}


@pytest.mark.parametrize("command", RENAMED)
def test_a_flag_its_former_spelling_and_both_toml_keys_set_the_same_field(command):
    name, flag, former, value = RENAMED[command]
    config = COMMANDS[command]
    parser = _subparser(command)
    present = from_arguments(config, parser.parse_args(MINIMAL[command] + [flag, value]))
    old = from_arguments(config, parser.parse_args(MINIMAL[command] + [former, value]))
    typed = int(value) if value.isdigit() else value
    assert getattr(present, name) == typed and old == present
    key, old_key = flag.lstrip("-").replace("-", "_"), former.lstrip("-").replace("-", "_")
    assert table_keys(config)[key] == name and alias_keys(config) == {old_key: key}
    assert from_table(config, {key: typed}, "t") == from_table(config, {old_key: typed}, "t") == present
    with pytest.raises(PipelineError, match=f"'{old_key}' is the former name of '{key}'"):
        from_table(config, {key: typed, old_key: typed}, "t")


def test_pipeline_files_with_former_keys_still_load_and_keep_their_fingerprint(tmp_path):
    toml = tmp_path / "p.toml"
    steps = {}
    for key in ("pool", "pooling"):
        toml.write_text(f'[[export]]\nname = "m"\nbackbone = "pixels"\n{key} = "max"\n'
                        '[[extract]]\nname = "s"\nmodel = "m"\nsources = ["x"]\nworkers = 2\n')
        steps[key] = load_pipeline(toml)
        assert from_table(ExtractConfig, steps[key]["extract"][0], "t", own_keys=STEP_KEYS["extract"]).decode_workers == 2
    old, new = (from_table(ExportConfig, steps[k]["export"][0], "t", own_keys=STEP_KEYS["export"]) for k in steps)
    assert old == new and old.pooling == "max"


def test_the_former_extract_options_name_still_imports_with_a_warning():
    import featurestore

    with pytest.warns(DeprecationWarning, match="ExtractOptions is renamed ExtractConfig"):
        assert featurestore.ExtractOptions is ExtractConfig
    with pytest.warns(DeprecationWarning):
        from featurestore.extract import ExtractOptions
    assert ExtractOptions is ExtractConfig


def test_ray_actors_have_their_own_flag_and_the_former_one_still_sets_them():
    from featurestore.cli.extract_cmd import ray_options

    parser = _subparser("extract")
    ray = MINIMAL["extract"] + ["--engine", "ray"]
    assert ray_options(parser.parse_args(ray + ["--ray-workers", "4"])).workers == 4
    assert ray_options(parser.parse_args(ray + ["--workers", "3"])).workers == 3  # the spelling before --ray-workers
    assert ray_options(parser.parse_args(ray + ["--ray-workers", "4", "--decode-workers", "3"])).workers == 4
    assert ray_options(parser.parse_args(ray)).workers == 2


@pytest.mark.parametrize("command", HEAD_COMMANDS)
def test_fit_predict_package_and_classify_flags_come_from_their_configs(command):
    config, minimal, given = HEAD_COMMANDS[command]
    assert from_arguments(config, _subparser(command).parse_args(minimal)) == config(**given)


def test_fit_flags_set_the_fit_config():
    args = _subparser("fit").parse_args(["s", "--head", "ensemble", "--layers", "a, b", "--fusion", "concat-l2",
                                         "--param", "C=0.5", "--param", 'members=["logreg", "nb"]',
                                         "--param", "method=stacking", "--search", "--task", "t", "-o", "h.skops"])
    config = from_arguments(FitConfig, args)
    assert config == FitConfig(head="ensemble", layers=("a", "b"), fusion="concat-l2", search=True, task="t",
                               params=("C=0.5", 'members=["logreg", "nb"]', "method=stacking"))
    assert config.head_params() == {"C": 0.5, "members": ["logreg", "nb"], "method": "stacking"}
    with pytest.raises(SystemExit):  # --head is required, as before
        _subparser("fit").parse_args(["s", "-o", "h.skops"])


def test_a_fit_param_without_a_value_is_one_line_and_exit_1(capsys):
    from featurestore.cli import main

    assert main(["fit", "s", "--head", "nb", "--param", "C", "-o", "h.skops"]) == 1
    err = capsys.readouterr().err.strip()
    assert "--param takes KEY=VALUE, got 'C'" in err and len(err.splitlines()) == 1
