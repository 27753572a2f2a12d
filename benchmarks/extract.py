"""Extraction throughput: `featurestore.extract` end to end vs inference-only baselines.

``python -m benchmarks.extract [--quick] [--backbones mobilenet_v2,resnet50] [--batch-sizes 1,8,32,64]``

For each backbone and batch size, interleaved and repeated:

- **A, torch eager**: ``model(x)`` under ``torch.inference_mode()`` on pre-decoded, normalised
  float NCHW tensors, same weights, classifier removed; contiguous and channels_last, the
  better median counts as A.
- **B, onnxruntime only**: ``FeatureModel.run`` on pre-decoded uint8 NHWC batches through the
  exported graph (the same session ``ours`` uses): the ceiling of ``ours``.
- **ours**: ``extract(model, jpeg_folder, fresh_store, ExtractConfig(batch_size=bs,
  device="cpu"))``: read, hash, decode, infer, write shards and manifest (fsync'd); a new store
  directory every repeat. The model is loaded once, outside the timing, as for A and B.

At batch 32 the MobileNetV2 group also times the ``stages`` export (5 pooled layers) both ways,
and our decoder alone (read + ``decode_image`` on one thread per core), which bounds ``ours``
when decoding and inference share the cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ._common import Variant, add_cache_dir, make_parser, measure, parse_args, ratio_cell, repeats_for
from ._common import run_and_report, scratch_dir, speed_ratio, table, time_ratio
from ._images import jpeg_folder, parse_sizes
from .ceiling import peak_gflops
from ._models import BACKBONES, BackboneCase, count_flops, exported_model, torch_twin
from .targets import evaluate

__all__ = ["main", "run"]

TARGET_BACKBONE, TARGET_BATCH = "mobilenet_v2", 32
VIT_BACKBONE = "timm:vit_small_patch16_224"


# --- inputs -------------------------------------------------------------------------------------
def _decode_all(files: list[Path], model, workers: int) -> np.ndarray:
    from featurestore import decode_image

    prep = model.spec.preprocessing
    with ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(lambda f: decode_image(f, prep), files)))


def _torch_inputs(images: np.ndarray, model) -> tuple[Any, Any]:
    import torch

    prep = model.spec.preprocessing
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).view(1, -1, 1, 1)
    x = ((x - mean) / std).contiguous()
    return x, x.contiguous(memory_format=torch.channels_last)


class _Backbone:
    """Everything one backbone's groups need, prepared once (untimed)."""

    def __init__(self, case: BackboneCase, count: int, args: argparse.Namespace, workers: int) -> None:
        import copy

        import torch

        from featurestore import FeatureModel

        self.case = case
        self.folder, self.folder_info = jpeg_folder(args.cache_dir, count, parse_sizes(args.sizes), args.seed)
        self.files = sorted(self.folder.glob("*.jpg"))
        self.paths = {"last": exported_model(case, "last", args.cache_dir)}
        self.models = {"last": FeatureModel(self.paths["last"], device="cpu")}
        if case.name == TARGET_BACKBONE:
            self.paths["stages"] = exported_model(case, "stages", args.cache_dir)
            self.models["stages"] = FeatureModel(self.paths["stages"], device="cpu")
        self.gflop = count_flops(self.paths["last"]) / 1e9
        self.images = _decode_all(self.files, self.models["last"], workers)
        self.x, self.x_cl = _torch_inputs(self.images, self.models["last"])
        self.torch = torch_twin(case)
        self.torch_cl = copy.deepcopy(self.torch).to(memory_format=torch.channels_last)
        self.parity = self._parity()

    def _parity(self) -> float:
        """Largest difference between torch's and onnxruntime's features, relative to their scale."""
        import torch

        with torch.inference_mode():
            ref = self.torch(self.x[:2]).numpy()
        ours = next(iter(self.models["last"].run(self.images[:2]).values()))
        if ref.shape != ours.shape:
            raise RuntimeError(f"{self.case.name}: torch gives {ref.shape}, the export {ours.shape}: not the same layer")
        return float(np.max(np.abs(ref - ours)) / max(float(np.max(np.abs(ours))), 1e-12))


# --- variants -----------------------------------------------------------------------------------
def _torch_variant(name: str, module, x, bs: int) -> Variant:
    import torch

    def run(_):
        with torch.inference_mode():
            for i in range(0, len(x), bs):
                module(x[i:i + bs])

    return Variant(name, run, len(x), "img")


def _ort_variant(name: str, model, images: np.ndarray, bs: int) -> Variant:
    def run(_):
        for i in range(0, len(images), bs):
            model.run(images[i:i + bs])

    return Variant(name, run, len(images), "img")


def _extract_variant(name: str, model, folder: Path, bs: int, workdir: Path) -> Variant:
    from featurestore import ExtractConfig, extract

    options = ExtractConfig(batch_size=bs, device="cpu", progress=False)
    counter = iter(range(10**9))
    count = len(list(folder.glob("*.jpg")))

    def run(store: Path) -> None:
        report = extract(model, folder, store, options)
        if report.rows_added != count:
            raise RuntimeError(f"{name}: extract added {report.rows_added} rows for {count} images")

    return Variant(name, run, count, "img", setup=lambda: workdir / f"store-{next(counter)}",
                   teardown=lambda store: shutil.rmtree(store, ignore_errors=True))


def _decode_variant(files: list[Path], model, workers: int) -> Variant:
    from featurestore import decode_image

    prep = model.spec.preprocessing

    def one(path: Path) -> None:
        decode_image(path.read_bytes(), prep)

    def run(_):
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, files))

    return Variant("decode only", run, len(files), "img")


def _group(bb: _Backbone, bs: int, workdir: Path, workers: int) -> list[Variant]:
    last = bb.models["last"]
    variants = [
        _torch_variant("A torch eager", bb.torch, bb.x, bs),
        _torch_variant("A torch channels_last", bb.torch_cl, bb.x_cl, bs),
        _ort_variant("B onnxruntime", last, bb.images, bs),
        _extract_variant("ours", last, bb.folder, bs, workdir),
    ]
    if bs == TARGET_BATCH:
        variants.append(_decode_variant(bb.files, last, workers))
        if "stages" in bb.models:
            variants.append(_ort_variant("B onnxruntime stages", bb.models["stages"], bb.images, bs))
            variants.append(_extract_variant("ours stages", bb.models["stages"], bb.folder, bs, workdir))
    return variants


def _warm(bb: _Backbone, bs: int) -> None:
    """One batch through every model at this batch size: allocations, kernel and primitive selection."""
    import torch

    with torch.inference_mode():
        bb.torch(bb.x[:bs])
        bb.torch_cl(bb.x_cl[:bs])
    for model in bb.models.values():
        model.run(bb.images[:bs])


# --- analysis -----------------------------------------------------------------------------------
def _analyse(bb: _Backbone, bs: int, stats: dict[str, dict[str, Any]], peak: float) -> dict[str, Any]:
    best = max(("A torch eager", "A torch channels_last"), key=lambda name: stats[name]["rate"])
    ratios = {"ours/A": speed_ratio(stats, "ours", best), "ours/B": speed_ratio(stats, "ours", "B onnxruntime"),
              "channels_last/eager": speed_ratio(stats, "A torch channels_last", "A torch eager")}
    extra: dict[str, Any] = {}
    if "decode only" in stats:
        bound = 1.0 / (1.0 / stats["decode only"]["rate"] + 1.0 / stats["B onnxruntime"]["rate"])
        extra = {"cpu_bound_estimate": bound, "ours_over_estimate": stats["ours"]["rate"] / bound}
    if "ours stages" in stats:
        ratios["stages/last end to end (time)"] = time_ratio(stats, "ours stages", "ours")
        ratios["stages/last onnxruntime (time)"] = time_ratio(stats, "B onnxruntime stages", "B onnxruntime")
    achieved = {name: s["rate"] * bb.gflop for name, s in stats.items() if name != "decode only"}
    return {
        "backbone": bb.case.name, "batch_size": bs, "images": len(bb.files), "gflop_per_image": bb.gflop,
        "torch_onnxruntime_max_rel_diff": bb.parity,
        "best_torch": best, "variants": stats, "ratios": ratios, "achieved_gflops": achieved,
        "fraction_of_peak": {name: value / peak for name, value in achieved.items()}, **extra,
    }


def _pct(ratio: dict[str, Any]) -> tuple[float, tuple[float, float]]:
    return 100 * (ratio["value"] - 1), (100 * (ratio["paired_min"] - 1), 100 * (ratio["paired_max"] - 1))


def _vit_target(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = [g for g in groups if g["backbone"] == VIT_BACKBONE and g["batch_size"] == TARGET_BATCH]
    if not found:
        return []
    g = found[0]
    ratio = g["ratios"]["ours/A"]
    v = g["variants"]
    return [evaluate("extract.vs_torch.vit", ratio["value"], paired_range=(ratio["paired_min"], ratio["paired_max"]),
                     note=f"A = {g['best_torch'][2:]} at {v[g['best_torch']]['rate']:.1f} img/s; "
                          f"B (onnxruntime only) {v['B onnxruntime']['rate']:.1f} img/s; ours {v['ours']['rate']:.1f} img/s.")]


def _targets(groups: list[dict[str, Any]], cores: int) -> list[dict[str, Any]]:
    return _mobilenet_targets(groups, cores) + _vit_target(groups)


def _mobilenet_targets(groups: list[dict[str, Any]], cores: int) -> list[dict[str, Any]]:
    found = [g for g in groups if g["backbone"] == TARGET_BACKBONE and g["batch_size"] == TARGET_BATCH]
    if not found:
        return []
    g = found[0]
    v, r = g["variants"], g["ratios"]
    a, b, ours = v[g["best_torch"]]["rate"], v["B onnxruntime"]["rate"], v["ours"]["rate"]
    decode, bound = v["decode only"]["rate"], g["cpu_bound_estimate"]
    rng = lambda ratio: (ratio["paired_min"], ratio["paired_max"])  # noqa: E731
    e2e, e2e_range = _pct(r["stages/last end to end (time)"])
    ort, ort_range = _pct(r["stages/last onnxruntime (time)"])
    noise = 50 * max(v["ours"]["spread"], v["ours stages"]["spread"])
    return [
        evaluate("extract.vs_torch", r["ours/A"]["value"], paired_range=rng(r["ours/A"]),
                 note=f"A = {g['best_torch'][2:]} at {a:.1f} img/s; B (onnxruntime only) is {b / a:.2f}x A; "
                      f"ours {ours:.1f} img/s."),
        evaluate("extract.vs_ort", r["ours/B"]["value"], paired_range=rng(r["ours/B"]),
                 note=f"Our decoder alone: {decode:.0f} img/s on {cores} threads; B: {b:.0f} img/s. Decoding and "
                      f"inference share {cores} cores, so the CPU-bound estimate 1/(1/B + 1/decode) is "
                      f"{bound:.0f} img/s = {bound / b:.2f}x B; ours reached {ours / bound:.2f}x that estimate.",
                 detail={"decode_img_s": decode, "cpu_bound_estimate_img_s": bound}),
        evaluate("extract.stages_overhead", e2e, paired_range=e2e_range,
                 note=f"onnxruntime only: {ort:+.1f}%; the e2e variants' own spread is about ±{noise:.0f}%, "
                      "so differences below it are noise."),
        evaluate("extract.stages_overhead_ort", ort, paired_range=ort_range,
                 note=f"end to end: {e2e:+.1f}%."),
    ]


# --- tables -------------------------------------------------------------------------------------
def _rate(stats: dict[str, Any]) -> str:
    return f"{stats['rate']:.1f} ±{50 * stats['spread']:.0f}%"


def _tables(groups: list[dict[str, Any]], peak: float, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for g in groups:
        v, r, frac = g["variants"], g["ratios"], g["fraction_of_peak"]
        rows.append([g["backbone"], g["batch_size"], g["images"], _rate(v["A torch eager"]),
                     _rate(v["A torch channels_last"]), _rate(v["B onnxruntime"]), _rate(v["ours"]),
                     ratio_cell(r["ours/A"]), ratio_cell(r["ours/B"]), f"{100 * frac['B onnxruntime']:.0f}%",
                     f"{100 * frac['ours']:.0f}%"])
    out = [table(f"Images/s, median of {repeats} repeats ±half-spread; ratios with per-repeat range; "
                 f"% of the onnxruntime sgemm peak ({peak:.0f} GFLOP/s)",
                 ["backbone", "batch", "images", "A eager", "A channels_last", "B onnxruntime", "ours",
                  "ours/A", "ours/B", "B % peak", "ours % peak"], rows)]
    bound_rows = [[g["backbone"], g["batch_size"], _rate(g["variants"]["decode only"]),
                   _rate(g["variants"]["B onnxruntime"]), f"{g['cpu_bound_estimate']:.1f}",
                   _rate(g["variants"]["ours"]), f"{g['ours_over_estimate']:.2f}"]
                  for g in groups if "decode only" in g["variants"]]
    if bound_rows:
        out.append(table("Decoding vs inference (images/s): CPU-bound estimate = 1 / (1/B + 1/decode)",
                         ["backbone", "batch", "decode only", "B onnxruntime", "estimate", "ours",
                          "ours/estimate"], bound_rows))
    for g in groups:
        if "ours stages" in g["variants"]:
            v, r = g["variants"], g["ratios"]
            out.append(table(f"`stages` (5 layers) vs `last`, {g['backbone']}, batch {g['batch_size']} (images/s)",
                             ["variant", "last", "stages", "stages extra time [per-repeat range]"],
                             [["onnxruntime only", _rate(v["B onnxruntime"]), _rate(v["B onnxruntime stages"]),
                               _pct_cell(r["stages/last onnxruntime (time)"])],
                              ["end to end", _rate(v["ours"]), _rate(v["ours stages"]),
                               _pct_cell(r["stages/last end to end (time)"])]]))
    return out


def _pct_cell(ratio: dict[str, Any]) -> str:
    value, (low, high) = _pct(ratio)
    return f"{value:+.1f}% [{low:+.1f}, {high:+.1f}]"


# --- entry point --------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every (backbone, batch size) group; return the results document."""
    import sys

    import torch

    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    images = args.images or (16 if args.quick else 256)
    batch_sizes = args.batch_sizes or ([1, 32] if args.quick else [1, 8, 32, 64])
    args.backbones = args.backbones or (["mobilenet_v2"] if args.quick else list(BACKBONES))
    unknown = [name for name in args.backbones if name not in BACKBONES]
    if unknown:
        raise SystemExit(f"unknown backbone(s) {', '.join(unknown)}; choose from {', '.join(BACKBONES)}")
    repeats = repeats_for(args)
    peak, peak_source = peak_gflops(args)
    groups, folders = [], {}
    with scratch_dir(args, "extract") as workdir:
        for name in args.backbones:
            bb = _Backbone(BACKBONES[name], max(4, round(images * BACKBONES[name].image_share)), args, cores)
            folders[name] = bb.folder_info
            for bs in batch_sizes:
                _warm(bb, bs)
                groups.append(_analyse(bb, bs, measure(_group(bb, bs, workdir, cores), repeats), peak))
                print(f"  {name} batch {bs}: ours {groups[-1]['variants']['ours']['rate']:.1f} img/s",
                      file=sys.stderr, flush=True)
    return {
        "parameters": {"backbones": args.backbones, "batch_sizes": batch_sizes, "images": images,
                       "images_per_backbone": {g["backbone"]: g["images"] for g in groups}, "sizes": args.sizes,
                       "threads": cores, "peak_gflops": peak, "peak_source": peak_source, "jpeg_folders": folders},
        "groups": groups, "targets": _targets(groups, cores), "notes": [],
        "tables": _tables(groups, peak, repeats),
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("extract", __doc__.splitlines()[0])
    parser.add_argument("--backbones", type=lambda s: [b for b in s.split(",") if b],
                        help="comma-separated (default: mobilenet_v2,resnet50; mobilenet_v2 with --quick)")
    parser.add_argument("--batch-sizes", type=lambda s: [int(b) for b in s.split(",")],
                        help="comma-separated (default: 1,8,32,64; 1,32 with --quick)")
    parser.add_argument("--images", type=int, help="JPEG files for MobileNetV2; ResNet-50 gets a quarter "
                                                   "(default: 256; 16 with --quick)")
    parser.add_argument("--sizes", default="500x375,1600x1200", help="JPEG sizes, taken in turn (WxH,WxH)")
    add_cache_dir(parser, "exported models and JPEG folders")
    args = parse_args(parser, argv)
    return run_and_report("extract", args, run)


if __name__ == "__main__":
    raise SystemExit(main())
