"""Benchmarks: extraction, storage, the heads loop, quantisation, Ray and CUDA against what users would use instead.

Every figure is a ratio of variants measured in the same run, interleaved and repeated, with
median and spread; nothing here is a timed unit test. ``python -m benchmarks`` runs every
script and rewrites ``BENCHMARKS.md``; ``python -m benchmarks.<name> --quick`` checks one script
in seconds (its numbers mean nothing).

Adding a benchmark
------------------
A script ``benchmarks/<name>.py``:

- defines ``main(argv=None) -> int`` and builds its parser with ``_common.make_parser(name, ...)``
  and ``_common.parse_args`` (so it takes ``--quick``, ``--repeats``, ``--results-dir``,
  ``--workdir`` and ``--seed``);
- times its variants with ``_common.measure`` (interleaved repeats) and computes ratios with
  ``_common.speed_ratio`` / ``_common.time_ratio``;
- writes ``<results-dir>/<name>.json`` with ``_common.write_result``, the document holding
  ``parameters``, ``tables`` (``_common.table``), ``notes`` and ``targets``: one
  ``targets.evaluate(id, measured, ...)`` entry per target of :data:`targets.TARGETS` whose
  ``benchmark`` is ``name``.

The report lists every target, measured or not.
"""

__all__ = ["SCRIPTS", "OPTIONAL_SCRIPTS"]

#: Scripts ``python -m benchmarks`` runs, in order (``ceiling`` first: the others read its peak).
SCRIPTS = ("ceiling", "extract", "store", "store_scale", "quant")
#: Scripts run when their module exists (``gpu`` measures CUDA only where a GPU and
#: onnxruntime's CUDA provider are present; elsewhere it records that it was skipped).
OPTIONAL_SCRIPTS = ("heads", "head_fit", "head_fit_regression", "head_fit_multilabel", "package", "transfer", "distributed", "gpu", "sources", "map")
