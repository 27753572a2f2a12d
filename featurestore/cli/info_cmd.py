"""``featurestore info STORE [--json]``: what a store holds, where it came from, what went wrong."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="rows, classes, splits, layers, shards, provenance, failures, leakage")
    p.add_argument("store", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--limit", type=int, default=20, help="list at most this many failures/duplicates (text)")
    return p


def store_info(path: Path) -> dict[str, Any]:
    """Everything `info` reports, as plain JSON data."""
    from ..store_paths import shard_file
    from ..store import open_store
    from ..tasks import task_summary
    from ..verify import orphan_files

    store = open_store(path)
    store.check_shards()
    spec = store.spec
    clean = store.views == 0
    manifest = store.manifest
    layer_stats = {}
    for layer in spec.layers:
        parts = [s.stats[layer.output] for s in manifest.shards if s.rows]
        count = sum(p["count"] for p in parts)
        mean = sum(p["sum"] for p in parts) / count if count else float("nan")
        var = sum(p["sumsq"] for p in parts) / count - mean**2 if count else float("nan")
        rows = manifest.rows
        layer_stats[layer.output] = {
            "dim": layer.dim, "channels": layer.channels, "stride": layer.stride, "pooling": layer.pooling,
            "mean": mean, "std": float(np.sqrt(max(var, 0.0))) if count else float("nan"),
            "min": min((p["min"] for p in parts), default=float("nan")),
            "max": max((p["max"] for p in parts), default=float("nan")),
            "mean_l2_norm": sum(p["norm_sum"] for p in parts) / rows if rows else float("nan"),
        }
    duplicates = store.duplicates()
    return {
        "store": str(path),
        "rows": len(store),
        "images": int(clean.sum()),
        "views": int(manifest.config.views),
        "fingerprint": store.fingerprint,
        "model": {"backbone": spec.backbone, "sha256": manifest.config.model_sha256,
                  "weights": spec.weights.source, "random_init": spec.weights.random_init,
                  "precision": spec.precision, "input": list(spec.input_shape)},
        "dtype": manifest.config.dtype,
        "classes": {c: n for c, n in sorted(Counter(store.labels[clean].tolist()).items()) if c},
        "tasks": task_summary(store),
        "splits": {s or "(none)": n for s, n in sorted(Counter(store.splits[clean].tolist()).items())},
        "layers": layer_stats,
        "shards": len(manifest.shards),
        "bytes": sum(shard_file(path, s.file).stat().st_size for s in manifest.shards),
        "failures": store.failures,
        "duplicates": {k: v for k, v in duplicates.items()},
        "leakage": store.leakage(),
        "label_conflicts": store.label_conflicts(),
        "runs": manifest.runs,
        "orphans": orphan_files(path),
    }


def run(args: argparse.Namespace) -> int:
    info = store_info(args.store)
    if args.json:
        print(json.dumps(info, indent=1, sort_keys=True))
        return 0
    model = info["model"]
    print(f"store        {info['store']}")
    print(f"model        {model['backbone']} ({model['weights']}{', RANDOM INIT' if model['random_init'] else ''}), "
          f"{model['precision']}, input {tuple(model['input'])}, sha256 {model['sha256'][:16]}...")
    print(f"fingerprint  {info['fingerprint']}")
    print(f"rows         {info['rows']} ({info['images']} images, {info['views']} augmented views each), "
          f"{info['dtype']}, {info['shards']} shards, {info['bytes'] / 1e6:.1f} MB")
    print("splits       " + ", ".join(f"{s} {n}" for s, n in info["splits"].items()))
    print(f"classes      {len(info['classes'])}: " + ", ".join(f"{c} ({n})" for c, n in info["classes"].items()))
    print(f"tasks        {len(info['tasks'])}")
    for name, task in info["tasks"].items():
        if task["type"] == "regression":
            detail = ("range [{:.4g}, {:.4g}], mean {:.4g}".format(*task["range"], task["mean"]) if task["range"]
                      else "no values")
        else:
            shown = list((task["classes"] if task["type"] == "classification" else task["labels"]).items())
            detail = f"{len(shown)} {'classes' if task['type'] == 'classification' else 'labels'}: " + ", ".join(
                f"{c} ({n})" for c, n in shown[: args.limit]) + (", ..." if len(shown) > args.limit else "")
        print(f"  {name:<22} {task['type']:<14} {task['rows']}/{task['of']} rows  {detail}")
    print("layers")
    for name, st in info["layers"].items():
        print(f"  {name:<24} dim {st['dim']:>5}  stride {st['stride'] or '-':>3}  pooling {st['pooling']:<6} "
              f"mean {st['mean']:.4g}  std {st['std']:.4g}  min {st['min']:.4g}  max {st['max']:.4g}")
    if info["orphans"]:
        print(f"orphans      {len(info['orphans'])} shard files not committed (`featurestore repair "
              f"{info['store']}` commits those holding rows the store lacks): "
              + ", ".join(info["orphans"][: args.limit]))
    for title, entries in (("failures", info["failures"]),):
        print(f"{title:<12} {len(entries)}")
        for f in entries[: args.limit]:
            print(f"  {f['path']}: {f['error']}: {f['message']}")
    for title, mapping in (("duplicates", info["duplicates"]), ("leakage", info["leakage"]),
                           ("conflicts", info["label_conflicts"])):
        print(f"{title:<12} {len(mapping)} keys")
        for key, values in list(mapping.items())[: args.limit]:
            print(f"  {key[:16]}...: {', '.join(values)}")
    return 0
