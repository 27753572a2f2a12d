"""``featurestore run PIPELINE.toml``: exports, extractions and benches declared in one file.

Steps run in file order (exports, then extractions, then benches). Each finished export
and bench records a fingerprint of its resolved configuration and of its inputs under
``WORKDIR/.pipeline/``; one whose output exists with the same fingerprint is skipped.
Extractions always list and hash their sources and add only content the store lacks
(images added to a folder are picked up); one that adds nothing leaves the store as it
was and counts as skipped, so re-running a finished pipeline does no work. One log
(``WORKDIR/pipeline.log``) and one summary at the end.

Example::

    workdir = "runs/demo"

    [[export]]
    name = "mnv2"                 # -> runs/demo/mnv2.onnx
    backbone = "mobilenet_v2"
    layers = "stages"

    [[extract]]
    name = "fmnist_mnv2"          # -> runs/demo/fmnist_mnv2/ (a store)
    model = "mnv2"                # an export's name, or a path to an .onnx file
    sources = ["fashion-mnist:train", "fashion-mnist:test"]
    limit = 2000                  # first N images of each source (0 or absent: all)

    [[bench]]
    name = "report"               # -> runs/demo/report/
    stores = ["fmnist_mnv2"]
    heads = ["logreg", "svm"]
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._atomic import file_sha256, write_bytes_atomic
from .._config import alias_keys, canonical_table, from_table, table_keys
from .._hints import close_matches_hint
from .._time import utc_timestamp
from .._version import __version__
from ..errors import PipelineError
from ..manifest import MANIFEST_NAME, committed_digest

__all__ = ["PipelineError", "StepOutcome", "load_pipeline", "run_pipeline"]

STEP_KINDS = ("export", "extract", "bench")
#: Keys of each step kind that are not options of its config dataclass.
STEP_KEYS = {"export": ("name", "backbone"), "extract": ("name", "model", "sources", "limit"),
             "bench": ("name", "stores")}


def _configs() -> dict[str, type]:
    from ..bench_config import BenchConfig
    from ..export_config import ExportConfig
    from ..extract import ExtractConfig

    return {"export": ExportConfig, "extract": ExtractConfig, "bench": BenchConfig}


def step_keys(kind: str, former: bool = True) -> set[str]:
    """Every key a ``[[kind]]`` step takes: its own and its config dataclass's, with (``former``)
    the former names of renamed keys (``pool`` for ``pooling``), which files written before
    the rename still use."""
    config = _configs()[kind]
    return set(STEP_KEYS[kind]) | set(table_keys(config)) | (set(alias_keys(config)) if former else set())


@dataclass
class StepOutcome:
    kind: str
    name: str
    status: str  # "ran" or "skipped"
    seconds: float
    detail: str = ""


def load_pipeline(path: str | Path) -> dict[str, Any]:
    """Parse and validate a pipeline file (unknown keys and duplicate names are errors)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"workdir", *STEP_KINDS}
    if unknown:
        raise PipelineError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    for kind in STEP_KINDS:
        names = []
        allowed = sorted(step_keys(kind))
        for step in data.get(kind, []):
            if "name" not in step:
                raise PipelineError(f"{path}: every [[{kind}]] step needs a name")
            extra = sorted(set(step) - set(allowed))
            if extra:
                raise PipelineError(f"{path}: [[{kind}]] {step['name']!r} has unknown key(s) {', '.join(extra)}; "
                                    f"{close_matches_hint(extra[0], allowed)}; allowed: {', '.join(allowed)}")
            from_table(_configs()[kind], step, f"{path}: [[{kind}]] {step['name']!r}", own_keys=STEP_KEYS[kind])
            names.append(step["name"])
        if len(set(names)) != len(names):
            raise PipelineError(f"{path}: duplicate [[{kind}]] names")
    return data


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class _Runner:
    def __init__(self, data: dict[str, Any], workdir: Path, limit: int | None, log: logging.Logger) -> None:
        self.data, self.workdir, self.limit_override, self.log = data, workdir, limit, log
        self.state = workdir / ".pipeline"
        self.state.mkdir(parents=True, exist_ok=True)
        self.models: dict[str, Path] = {}

    def _record(self, kind: str, name: str) -> Path:
        return self.state / f"{kind}-{name}.json"

    def _done(self, kind: str, name: str, fingerprint: str) -> bool:
        record = self._record(kind, name)
        return record.is_file() and json.loads(record.read_text()).get("fingerprint") == fingerprint

    def _finish(self, kind: str, name: str, fingerprint: str, **extra: Any) -> None:
        body = {"fingerprint": fingerprint, "finished": utc_timestamp(), **extra}
        write_bytes_atomic(self._record(kind, name), json.dumps(body, indent=1).encode())

    def export(self, step: dict[str, Any]) -> tuple[str, str]:
        from export import export_backbone

        output = self.workdir / f"{step['name']}.onnx"
        self.models[step["name"]] = output
        # `offline` says where the weights may come from, not which: the same file either way.
        present = canonical_table(_configs()["export"], step, f"[[export]] {step['name']!r}")
        config = {k: present.get(k) for k in sorted(step_keys("export", former=False) - {"offline"})} | {
            "featurestore": __version__}
        if step.get("weights"):
            config["weights_sha256"] = file_sha256(step["weights"])
        fingerprint = _hash(config)
        if output.is_file() and self._done("export", step["name"], fingerprint) and \
                json.loads(self._record("export", step["name"]).read_text()).get("sha256") == file_sha256(output):
            return "skipped", f"{output} is up to date"
        options = from_table(_configs()["export"], step, f"[[export]] {step['name']!r}", own_keys=STEP_KEYS["export"])
        spec, _ = export_backbone(step["backbone"], output, **options.as_keywords())
        self._finish("export", step["name"], fingerprint, sha256=file_sha256(output))
        return "ran", f"{output}: {', '.join(layer.output for layer in spec.layers)}"

    def _model_path(self, ref: str) -> Path:
        if ref in self.models:
            return self.models[ref]
        path = Path(ref)
        if not path.is_file():
            raise PipelineError(f"model {ref!r} is neither an [[export]] name nor an existing file")
        return path

    def _source(self, spec: str, limit: int | None, options: Any):
        from ..extract import source_options
        from ..sources import FashionMnistSource, open_source

        if limit and spec.startswith("fashion-mnist:"):
            return FashionMnistSource(spec.split(":", 1)[1], limit=limit)
        source = open_source(spec, **source_options(options))
        return _Limited(source, limit) if limit else source

    def extract(self, step: dict[str, Any]) -> tuple[str, str]:
        from ..extract import ExtractConfig, extract

        store = self.workdir / step["name"]
        model = self._model_path(step["model"])
        limit = self.limit_override if self.limit_override is not None else step.get("limit")
        limit = limit or None
        options = from_table(ExtractConfig, step, f"[[extract]] {step['name']!r}", own_keys=STEP_KEYS["extract"],
                             progress=False)
        # No skip on the step's own record: the store's incremental skip (known content keys) is
        # the authority, so images added to a source are found on every run; an unchanged source
        # costs a listing and a hash per image and leaves the store byte-identical.
        before = committed_digest(store)
        reports = []
        for spec in step["sources"]:
            report = extract(model, self._source(spec, limit, options), store, options)
            self.log.info(report.summary())
            reports.append((spec, report))
        if committed_digest(store) == before:
            listed = sum(report.listed for _, report in reports)
            return "skipped", f"{store} is up to date ({listed} images listed, none new)"
        details = [f"{spec}: {report.rows_added} rows added, {report.decoded} decoded, "
                   f"{len(report.failures)} failed, {report.images_per_s:.0f} img/s" for spec, report in reports]
        return "ran", "; ".join(details)

    def bench(self, step: dict[str, Any]) -> tuple[str, str]:
        from heads.bench import BenchConfig, run_bench

        from .bench_cmd import print_table

        output = self.workdir / step["name"]
        stores = [self.workdir / s if (self.workdir / s).exists() else Path(s) for s in step["stores"]]
        for store in stores:
            if not (store / MANIFEST_NAME).is_file():
                raise PipelineError(f"bench {step['name']!r}: {store} is not a store")
        config = from_table(BenchConfig, step, f"[[bench]] {step['name']!r}", own_keys=STEP_KEYS["bench"])
        fingerprint = _hash({"config": {k: step.get(k) for k in sorted(step_keys("bench", former=False))},
                             "stores": [committed_digest(s) for s in stores]})
        if (output / "report.html").is_file() and self._done("bench", step["name"], fingerprint):
            return "skipped", f"{output / 'report.html'} is up to date"
        document = run_bench(stores, output, config, log=self.log.info)
        print_table(document)
        self._finish("bench", step["name"], fingerprint)
        return "ran", f"report: {output / 'report.html'}"


class _Limited:
    """The first ``limit`` items of a source."""

    def __init__(self, source, limit: int) -> None:
        self.source, self.limit = source, limit
        self.name = f"{source.name}[:{limit}]"
        self.classes = source.classes

    def __len__(self) -> int:
        return min(len(self.source), self.limit)

    def __iter__(self):
        return itertools.islice(iter(self.source), self.limit)


def run_pipeline(path: str | Path, *, workdir: str | Path | None = None, limit: int | None = None) -> list[StepOutcome]:
    """Run every step of the pipeline file; returns what each step did.

    Parameters
    ----------
    path : str or Path
        The TOML file.
    workdir : str or Path, optional
        Overrides the file's ``workdir``.
    limit : int, optional
        Overrides every extraction's ``limit`` (0 = all images).
    """
    data = load_pipeline(path)
    root = Path(workdir or data.get("workdir") or Path(path).with_suffix(""))
    root.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger("featurestore.pipeline")
    log.setLevel(logging.INFO)
    handlers = [logging.FileHandler(root / "pipeline.log"), logging.StreamHandler()]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    runner = _Runner(data, root, limit, log)
    outcomes = []
    try:
        log.info(f"pipeline {path} in {root}")
        for kind in STEP_KINDS:
            for step in data.get(kind, []):
                start = time.perf_counter()
                log.info(f"[{kind}] {step['name']} ...")
                status, detail = getattr(runner, kind)(step)
                outcome = StepOutcome(kind, step["name"], status, time.perf_counter() - start, detail)
                log.info(f"[{kind}] {step['name']}: {status} in {outcome.seconds:.1f} s: {detail}")
                outcomes.append(outcome)
        log.info("summary:\n" + "\n".join(f"  {o.kind:<8} {o.name:<20} {o.status:<8} {o.seconds:8.1f} s  {o.detail}"
                                          for o in outcomes))
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
    return outcomes
