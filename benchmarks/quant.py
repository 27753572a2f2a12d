"""int8 static quantisation: onnxruntime speed and Fashion-MNIST accuracy, int8 vs fp32 features.

``python -m benchmarks.quant [--quick] [--backbones mobilenet_v2,resnet50] [--speed-only]``

``--speed-only`` measures, in one run and interleaved, images/s of torch fp32 eager (channels_last
for CNNs), torch bf16 autocast (``torch.autocast("cpu", dtype=torch.bfloat16)``, channels_last for
CNNs), onnxruntime fp32 (our export) and onnxruntime int8 as ``featurestore export --precision
int8`` makes it (:func:`export.quantize.quantize_model`, its default remedies), on pre-decoded
batches of 32 (torch gets its input already normalised), 2 threads each; the CPU's ISA flags go
with the result.

Each backbone is exported with ``layers="last"`` and quantised with
``onnxruntime.quantization.quantize_static`` (QDQ, per-channel, uint8 activations, int8
weights, MinMax calibration over Fashion-MNIST training images preprocessed by our own
decoder), after ``quant_pre_process``. Only the op types in ``--op-types`` are quantised: the
graph's uint8 input, its Cast and its mean/std normalisation stay float. The quantised file
keeps the export's ``metadata_props`` (the featurestore spec), so ``FeatureModel`` opens it.

- **speed**: ``FeatureModel.run`` over pre-decoded batches of 32, int8 vs fp32, interleaved.
- **accuracy**: a logistic regression (standardised features) fitted on the training images'
  features and scored on the test images', fp32 features vs int8 features.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import Variant, add_cache_dir, cpu_info, make_parser, measure, parse_args, ratio_cell, repeats_for
from ._common import run_and_report, scratch_dir, speed_ratio, table
from ._models import BACKBONES, BackboneCase, exported_model
from .ceiling import peak_gflops
from .targets import evaluate

__all__ = ["DEFAULT_OP_TYPES", "main", "quantize", "run"]

DEFAULT_OP_TYPES = ("Conv", "MatMul", "Gemm", "Add", "Clip", "Relu")
BATCH = 32


def _fashion_mnist(split: str, count: int, prep) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images of a split, preprocessed by our decoder, and their labels."""
    from featurestore import FashionMnistSource, preprocess_array

    items = list(FashionMnistSource(split, limit=count))
    return np.stack([preprocess_array(item.array, prep) for item in items]), np.array([item.label for item in items])


def _reader(images: np.ndarray, input_name: str, batch: int = 16):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{input_name: images[i:i + batch]} for i in range(0, len(images), batch)])

        def get_next(self):
            return next(self.batches, None)

    return Reader()


def quantize(fp32: Path, output: Path, calibration: np.ndarray, op_types: list[str], *, reduce_range: bool,
             first_conv_float: bool = False) -> dict[str, Any]:
    """Quantise ``fp32`` statically into ``output`` (QDQ, per-channel) and copy its metadata.

    ``reduce_range`` quantises weights to 7 bits, which onnxruntime advises on x86 CPUs without
    VNNI (their uint8 x int8 kernels can saturate); ``first_conv_float`` leaves the first Conv
    unquantised.

    Returns
    -------
    dict
        What was done: pre-processing (or why it was skipped), seconds, Q/DQ node counts.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from featurestore import read_spec

    started = time.perf_counter()
    prepared = output.with_name(output.stem + "-pre.onnx")
    try:
        quant_pre_process(str(fp32), str(prepared))
        pre_process = "quant_pre_process"
    except Exception as exc:  # the quantiser also works on the raw export
        prepared, pre_process = fp32, f"skipped: {type(exc).__name__}: {exc}"[:300]
    convs = [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type == "Conv"]
    excluded = convs[:1] if first_conv_float else []
    quantize_static(str(prepared), str(output), _reader(calibration, read_spec(fp32).input_name),
                    quant_format=QuantFormat.QDQ, per_channel=True, op_types_to_quantize=list(op_types),
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range,
                    nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax)
    model = onnx.load(str(output))
    del model.metadata_props[:]
    model.metadata_props.extend(onnx.load(str(fp32), load_external_data=False).metadata_props)
    onnx.save(model, str(output))
    ops = [node.op_type for node in model.graph.node]
    return {"pre_process": pre_process, "seconds": time.perf_counter() - started,
            "quantize_linear": ops.count("QuantizeLinear"), "dequantize_linear": ops.count("DequantizeLinear"),
            "op_types": list(op_types), "calibration_images": len(calibration), "reduce_range": reduce_range,
            "nodes_excluded": excluded,
            "bytes_fp32": fp32.stat().st_size, "bytes_int8": output.stat().st_size}


def _reduce_range(choice: str) -> bool:
    """``auto``: reduce the weight range unless the CPU has VNNI (onnxruntime's advice)."""
    if choice != "auto":
        return choice == "on"
    return not {"avx512_vnni", "avx_vnni", "amx_tile"} & set(cpu_info()["flags"])


def _features(model, images: np.ndarray) -> np.ndarray:
    parts = [model.run(images[i:i + BATCH]) for i in range(0, len(images), BATCH)]
    return np.concatenate([np.concatenate(list(p.values()), axis=1) for p in parts])


def _accuracy(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    head.fit(*train)
    return float(head.score(*test))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = np.sum(a * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))


def _run_backbone(case: BackboneCase, args: argparse.Namespace, sizes: dict[str, int], workdir: Path,
                  repeats: int, peak: float) -> dict[str, Any]:
    from featurestore import FeatureModel

    from ._models import count_flops

    fp32_path = exported_model(case, "last", args.cache_dir)
    fp32 = FeatureModel(fp32_path, device="cpu")
    prep = fp32.spec.preprocessing
    train_x, train_y = _fashion_mnist("train", max(sizes["train"], sizes["calibration"]), prep)
    test_x, test_y = _fashion_mnist("test", max(sizes["test"], sizes["speed"]), prep)
    int8_path = workdir / f"{case.name}-int8.onnx"
    info = quantize(fp32_path, int8_path, train_x[:sizes["calibration"]], args.op_types,
                    reduce_range=_reduce_range(args.reduce_range), first_conv_float=args.first_conv_float)
    models = {"fp32": fp32, "int8": FeatureModel(int8_path, device="cpu")}
    speed = test_x[:sizes["speed"]]
    for model in models.values():  # allocations and kernel selection
        model.run(speed[:BATCH])
    stats = measure([Variant(name, lambda _, m=m: _features(m, speed), len(speed), "img")
                     for name, m in models.items()], repeats)
    feats = {name: (_features(m, train_x[:sizes["train"]]), _features(m, test_x[:sizes["test"]]))
             for name, m in models.items()}
    accuracy = {name: _accuracy((tr, train_y[:sizes["train"]]), (te, test_y[:sizes["test"]]), args.seed)
                for name, (tr, te) in feats.items()}
    gflop = count_flops(fp32_path) / 1e9
    return {
        "backbone": case.name, "random_init": case.random_init, "gflop_per_image": gflop, "quantization": info,
        "variants": stats, "speedup": speed_ratio(stats, "int8", "fp32"), "accuracy": accuracy,
        "accuracy_loss_points": 100 * (accuracy["fp32"] - accuracy["int8"]),
        "feature_cosine": _cosine(feats["fp32"][1], feats["int8"][1]),
        "fraction_of_peak": {name: s["rate"] * gflop / peak for name, s in stats.items()},
    }


def _targets(results: list[dict[str, Any]], sizes: dict[str, int]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        name, q, s = r["backbone"], r["quantization"], r["speedup"]
        caveat = (" Random-init weights: this measures feature fidelity, not transfer quality."
                  if r["random_init"] else "")
        out.append(evaluate(
            f"quant.speedup.{name}", s["value"], paired_range=(s["paired_min"], s["paired_max"]),
            note=f"fp32 {r['variants']['fp32']['rate']:.1f} img/s ({100 * r['fraction_of_peak']['fp32']:.0f}% of "
                 f"the sgemm peak), int8 {r['variants']['int8']['rate']:.1f} img/s; quantised op types "
                 f"{', '.join(q['op_types'])}; reduce_range {q['reduce_range']}; {q['quantize_linear']} "
                 f"QuantizeLinear nodes; {q['pre_process']}.",
            detail={"quantization": q}))
        out.append(evaluate(
            f"quant.accuracy_loss.{name}", r["accuracy_loss_points"],
            note=f"accuracy fp32 {r['accuracy']['fp32']:.4f}, int8 {r['accuracy']['int8']:.4f} "
                 f"({sizes['train']} train / {sizes['test']} test images, one fit each); mean cosine "
                 f"similarity of int8 to fp32 features {r['feature_cosine']:.4f}.{caveat}"))
    return out


def _tables(results: list[dict[str, Any]], sizes: dict[str, int], repeats: int) -> list[dict[str, Any]]:
    rows = [[r["backbone"], f"{r['variants']['fp32']['rate']:.1f} ±{50 * r['variants']['fp32']['spread']:.0f}%",
             f"{r['variants']['int8']['rate']:.1f} ±{50 * r['variants']['int8']['spread']:.0f}%",
             ratio_cell(r["speedup"]), f"{r['accuracy']['fp32']:.4f}", f"{r['accuracy']['int8']:.4f}",
             f"{r['accuracy_loss_points']:+.2f}", f"{r['feature_cosine']:.4f}"] for r in results]
    return [table(f"int8 vs fp32: images/s (onnxruntime, batch {BATCH}, median of {repeats} ±half-spread) and "
                  f"Fashion-MNIST logistic-regression accuracy ({sizes['train']} train / {sizes['test']} test)",
                  ["backbone", "fp32 img/s", "int8 img/s", "int8/fp32", "acc fp32", "acc int8", "loss (points)",
                   "cosine"], rows)]


def _speed_backbone(case: BackboneCase, args: argparse.Namespace, images: np.ndarray, repeats: int,
                    threads: int, workdir: Path) -> dict[str, Any]:
    """torch fp32, torch bf16 autocast, onnxruntime fp32 and the product's int8, interleaved."""
    import torch

    from export.quantize import CalibrationSet, quantize_model
    from featurestore import FeatureModel, read_spec

    from ._models import torch_twin

    fp32_path = exported_model(case, "last", args.cache_dir)
    spec = read_spec(fp32_path)
    calibration = CalibrationSet(images[:32], images[32:64], ("benchmark",), 0, "benchmark")
    started = time.perf_counter()
    int8_spec, int8_bytes = quantize_model(fp32_path.read_bytes(), spec, calibration)
    quantize_s = time.perf_counter() - started
    int8_path = workdir / f"{case.name.replace(':', '_')}-int8.onnx"
    int8_path.write_bytes(int8_bytes)
    models = {"onnxruntime fp32": FeatureModel(fp32_path, device="cpu", intra_op_threads=threads),
              "onnxruntime int8": FeatureModel(int8_path, device="cpu", intra_op_threads=threads)}
    prep = spec.preprocessing
    mean = torch.tensor(prep.mean).view(1, -1, 1, 1)
    std = torch.tensor(prep.std).view(1, -1, 1, 1)
    tensor = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    module = torch_twin(case)
    cnn = not case.name.startswith("timm:vit")
    if cnn:
        module, tensor = module.to(memory_format=torch.channels_last), tensor.contiguous(
            memory_format=torch.channels_last)
    torch.set_num_threads(threads)

    def torch_pass(dtype: Any) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            for i in range(0, len(tensor), BATCH):
                module(tensor[i:i + BATCH])

    def ort_pass(model: Any) -> None:
        for i in range(0, len(images), BATCH):
            model.run(images[i:i + BATCH])

    layout = " channels_last" if cnn else ""
    variants = [Variant(f"torch fp32{layout}", lambda _: torch_pass(None), len(images), "img"),
                Variant(f"torch bf16 autocast{layout}", lambda _: torch_pass(torch.bfloat16), len(images), "img")]
    variants += [Variant(name, lambda _, m=m: ort_pass(m), len(images), "img") for name, m in models.items()]
    stats = measure(variants, repeats, warmup=True)
    q = int8_spec.quantization
    return {"backbone": case.name, "random_init": case.random_init, "variants": stats,
            "quantization": {"mode": q.mode, "op_types": list(q.op_types), "float_nodes": list(q.float_nodes),
                             "cosine": q.cosine, "seconds": quantize_s},
            "int8_vs": {name: speed_ratio(stats, "onnxruntime int8", name) for name in stats
                        if name != "onnxruntime int8"}}


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    """``--speed-only``: the four ways to run each backbone on the CPU, images/s and ratios."""
    threads = 2
    count = args.speed or (64 if args.quick else 96)
    repeats = repeats_for(args)
    results = []
    with scratch_dir(args, "quant-speed") as workdir:
        for name in args.backbones:
            images = _fashion_mnist("train", max(count, 64), _prep_of(name, args))[0]
            results.append(_speed_backbone(BACKBONES[name], args, images, repeats, threads, workdir))
            print(f"  {name}: " + ", ".join(f"{k} {v['rate']:.1f}" for k, v in results[-1]["variants"].items()),
                  flush=True)
    rows = []
    for r in results:
        for name, st in r["variants"].items():
            ratio = r["int8_vs"].get(name)
            rows.append([r["backbone"], name, f"{st['rate']:.1f} ±{50 * st['spread']:.0f}%",
                         ratio_cell(ratio) if ratio else "-"])
    flags = cpu_info()
    return {
        "parameters": {"backbones": args.backbones, "speed": count, "batch": BATCH, "threads": threads,
                       "cpu": flags, "load_average": os.getloadavg()},
        "results": results, "targets": [], "notes": [
            f"CPU {flags['model']}, flags {' '.join(flags['flags'])}; load average {os.getloadavg()[0]:.2f} at the "
            "end; torch takes input already normalised (NCHW float), onnxruntime uint8 NHWC (it normalises in-graph)."],
        "tables": [table(f"images/s, batch {BATCH}, {threads} threads, median of {repeats} (±half-spread), "
                         "pre-decoded input; int8 ratio = onnxruntime int8 over that row",
                         ["backbone", "variant", "img/s", "int8 / this"], rows)],
    }


def _prep_of(name: str, args: argparse.Namespace):
    from featurestore import read_spec

    return read_spec(exported_model(BACKBONES[name], "last", args.cache_dir)).preprocessing


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Quantise and measure every backbone; return the results document."""
    args.backbones = args.backbones or (["mobilenet_v2"] if args.quick else list(BACKBONES))
    unknown = [name for name in args.backbones if name not in BACKBONES]
    if unknown:
        raise SystemExit(f"unknown backbone(s) {', '.join(unknown)}; choose from {', '.join(BACKBONES)}")
    if getattr(args, "speed_only", False):
        return run_speed(args)
    quick = {"train": 300, "test": 200, "calibration": 32, "speed": 64}
    full = {"train": 5000, "test": 2000, "calibration": 200, "speed": 256}
    sizes = {k: getattr(args, k) or (quick if args.quick else full)[k] for k in full}
    repeats, (peak, peak_source) = repeats_for(args), peak_gflops(args)
    results = []
    with scratch_dir(args, "quant") as workdir:
        for name in args.backbones:
            results.append(_run_backbone(BACKBONES[name], args, sizes, workdir, repeats, peak))
            print(f"  {name}: int8/fp32 {results[-1]['speedup']['value']:.2f}x", flush=True)
    return {
        "parameters": {"backbones": args.backbones, **sizes, "batch": BATCH, "op_types": args.op_types,
                       "reduce_range": args.reduce_range, "first_conv_float": args.first_conv_float,
                       "threads": len(os.sched_getaffinity(0)), "peak_gflops": peak, "peak_source": peak_source},
        "results": results, "targets": _targets(results, sizes), "notes": [],
        "tables": _tables(results, sizes, repeats),
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("quant", __doc__.splitlines()[0])
    parser.add_argument("--backbones", type=lambda s: [b for b in s.split(",") if b],
                        help="comma-separated (default: mobilenet_v2,resnet50; mobilenet_v2 with --quick)")
    parser.add_argument("--train", type=int, help="training images of the head (default: 5000; 300 with --quick)")
    parser.add_argument("--test", type=int, help="test images (default: 2000; 200 with --quick)")
    parser.add_argument("--calibration", type=int, help="calibration images (default: 200; 32 with --quick)")
    parser.add_argument("--speed", type=int, help="images per timed pass (default: 256; 64 with --quick)")
    parser.add_argument("--op-types", type=lambda s: s.split(","), default=list(DEFAULT_OP_TYPES),
                        help=f"op types to quantise (default: {','.join(DEFAULT_OP_TYPES)})")
    parser.add_argument("--reduce-range", choices=("auto", "on", "off"), default="auto",
                        help="7-bit weights (default auto: on when the CPU lacks VNNI)")
    parser.add_argument("--first-conv-float", action="store_true", help="leave the first Conv unquantised")
    parser.add_argument("--speed-only", action="store_true",
                        help="images/s of torch fp32, torch bf16 autocast, onnxruntime fp32 and the int8 export")
    add_cache_dir(parser)
    args = parse_args(parser, argv)
    return run_and_report("quant_speed" if args.speed_only else "quant", args, run, show_notes=args.speed_only)


if __name__ == "__main__":
    raise SystemExit(main())
