"""int8 on the CPU: the product's int8 export against the fastest things a PyTorch user would run.

``python -m benchmarks.quant [--quick] [--backbones mobilenet_v2,resnet50,...] [--train N] [--test N]``

For each backbone, in one run, interleaved and repeated, images/s of:

- **torch fp32 eager** (NCHW) and **torch fp32 channels_last** (CNNs), on input already
  decoded and normalised (float NCHW);
- **torch bf16 autocast** (``torch.autocast("cpu", dtype=torch.bfloat16)``; channels_last for
  CNNs), the one-line alternative on CPUs with AVX-512 BF16 or AMX;
- **onnxruntime fp32** (our export) and **onnxruntime int8** (``featurestore export --precision
  int8`` as the product makes it: :func:`export.quantize.quantize_model` with its defaults,
  calibrated on Fashion-MNIST training images drawn as ``--calibrate fashion-mnist:train`` draws
  them), on the same images decoded to uint8;
- **extract fp32** and **extract int8**: ``featurestore extract`` end to end, the JPEG folder into
  a fresh store on disk, with each model.

Batch 32, ``--threads`` threads for torch and onnxruntime (extract uses its defaults). The speed
images are JPEGs cut from scikit-image's photos (the extract benchmark's generator). For the
backbones with pretrained weights, the **transfer accuracy** of fp32 vs int8 features: a
logistic regression and an RBF SVM (standardised features) fitted on ``--train`` Fashion-MNIST
training images and scored on ``--test`` test images, each model's features through
``FeatureModel``. The int8 model's cosine to fp32 (the spec's, on held-back calibration images)
and what ``--precision auto`` would choose on this CPU (:func:`featurestore.cpu.choose_precision`)
go with each backbone.

**Instruction sets** (:mod:`benchmarks._isa`; ``--isa-only`` runs just this, ``--no-isa`` skips
it): onnxruntime fp32 against int8 again, in child processes whose CPUID hides VNNI and AMX, or
those and AVX-512, so that onnxruntime runs the kernels of a CPU without them: the speed-up and
int8's cosine to fp32 there, and what ``--precision auto`` picks. It needs Linux's CPUID faulting
and a C compiler; without them the run says why in its notes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import Variant, add_cache_dir, cpu_info, make_parser, measure, parse_args, ratio_cell, repeats_for
from ._common import run_and_report, scratch_dir, speed_ratio, table
from ._isa import MASKS, build_shim
from ._models import BACKBONES, BackboneCase, exported_model
from .targets import evaluate

__all__ = ["CASES", "main", "run"]

BATCH = 32
#: The backbones of issue 31: MobileNetV2 and EfficientNet-Lite0 with their ImageNet weights
#: (transfer accuracy), ResNet-50 and ViT-S/16 with random weights (speed only).
CASES: dict[str, BackboneCase] = {
    "mobilenet_v2": BACKBONES["mobilenet_v2"],
    "efficientnet_lite0": BackboneCase("efficientnet_lite0", random_init=False, nominal_gflop=0.80),
    "resnet50": BACKBONES["resnet50"],
    "timm:vit_small_patch16_224": BACKBONES["timm:vit_small_patch16_224"],
}
#: Transfer-accuracy targets: pretrained backbones only.
TRANSFER = ("mobilenet_v2", "efficientnet_lite0")
#: int8 extensions shown in the instruction-set table.
_INT8_SHOWN = ("avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
ISA_NOTE = ("Instruction sets: each backbone's fp32 and int8 exports also ran in child processes whose CPUID hides "
            "VNNI and AMX (an AVX-512 CPU without VNNI), or those and AVX-512 (an AVX2-only CPU), so onnxruntime "
            "picks the kernels such a CPU runs (benchmarks/cpuid_mask.c, through Linux's CPUID faulting). The cores, "
            "clock and caches stay this machine's: the ratios compare kernels, not CPUs. Without VNNI onnxruntime's "
            "uint8 x int8 kernels sum pairs of products in 16 bits (VPMADDUBSW), which saturates where activations "
            "and weights are large; the cosine column shows what that does to each model's features.")
#: extract int8 vs torch bf16 autocast targets, by backbone.
VS_BF16 = {"resnet50": "extract.int8_vs_bf16.resnet50", "timm:vit_small_patch16_224": "extract.int8_vs_bf16.vit"}


def _fashion_mnist(split: str, count: int, prep) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images of a split, preprocessed by our decoder, and their labels."""
    from featurestore import FashionMnistSource, preprocess_array

    items = list(FashionMnistSource(split, limit=count))
    return np.stack([preprocess_array(item.array, prep) for item in items]), np.array([item.label for item in items])


def _features(model, images: np.ndarray) -> np.ndarray:
    parts = [model.run(images[i:i + BATCH]) for i in range(0, len(images), BATCH)]
    return np.concatenate([np.concatenate(list(p.values()), axis=1) for p in parts])


def _accuracy(kind: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
              seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    head = LogisticRegression(max_iter=2000, random_state=seed) if kind == "logreg" else SVC(random_state=seed)
    model = make_pipeline(StandardScaler(), head)
    model.fit(*train)
    return float(model.score(*test))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = np.sum(a * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))


def _int8(case: BackboneCase, fp32_path: Path, calibration: int, workdir: Path) -> tuple[Path, Any, float]:
    """The product's int8 export of ``fp32_path``, calibrated on Fashion-MNIST: (path, spec, seconds)."""
    from export.quantize import draw_calibration, quantize_model
    from featurestore import read_spec

    spec = read_spec(fp32_path)
    started = time.perf_counter()
    calib = draw_calibration("fashion-mnist:train", spec.preprocessing, calibration)
    int8_spec, data = quantize_model(fp32_path.read_bytes(), spec, calib)
    seconds = time.perf_counter() - started
    path = workdir / f"{case.name.replace(':', '_')}-int8.onnx"
    path.write_bytes(data)
    return path, int8_spec, seconds


def _speed(case: BackboneCase, paths: dict[str, Path], folder: Path, repeats: int, threads: int,
           workdir: Path) -> dict[str, Any]:
    """The seven variants, interleaved."""
    import torch

    from featurestore import ExtractConfig, FeatureModel, decode_image, extract

    from ._models import torch_twin

    models = {name: FeatureModel(path, device="cpu", intra_op_threads=threads) for name, path in paths.items()}
    prep = models["fp32"].spec.preprocessing
    files = sorted(folder.glob("*.jpg"))
    images = np.stack([decode_image(f.read_bytes(), prep) for f in files])
    mean = torch.tensor(prep.mean).view(1, -1, 1, 1)
    std = torch.tensor(prep.std).view(1, -1, 1, 1)
    tensor = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    tensor = tensor.contiguous()
    torch.set_num_threads(threads)
    module = torch_twin(case)
    cnn = not case.name.startswith("timm:vit")
    modules = {"eager": (module, tensor)}
    if cnn:
        import copy

        modules["channels_last"] = (copy.deepcopy(module).to(memory_format=torch.channels_last),
                                    tensor.contiguous(memory_format=torch.channels_last))

    def torch_pass(key: str, bf16: bool) -> None:
        net, x = modules[key]
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for i in range(0, len(x), BATCH):
                net(x[i:i + BATCH])

    def ort_pass(model: Any) -> None:
        for i in range(0, len(images), BATCH):
            model.run(images[i:i + BATCH])

    counter = iter(range(10**9))
    options = ExtractConfig(batch_size=BATCH, device="cpu", progress=False)

    def extract_pass(model: Any, store: Path) -> None:
        report = extract(model, folder, store, options)
        if report.rows_added != len(files):
            raise RuntimeError(f"extract added {report.rows_added} rows for {len(files)} images")

    layout = "channels_last" if cnn else "eager"
    n = len(files)
    variants = [Variant("torch fp32 eager", lambda _: torch_pass("eager", False), n, "img")]
    if cnn:
        variants.append(Variant("torch fp32 channels_last", lambda _: torch_pass("channels_last", False), n, "img"))
    variants.append(Variant(f"torch bf16 autocast{' channels_last' if cnn else ''}",
                            lambda _: torch_pass(layout, True), n, "img"))
    variants += [Variant(f"onnxruntime {name}", lambda _, m=m: ort_pass(m), n, "img") for name, m in models.items()]
    variants += [Variant(f"extract {name}", lambda store, m=m: extract_pass(m, store), n, "img",
                         setup=lambda: workdir / f"store-{next(counter)}",
                         teardown=lambda store: shutil.rmtree(store, ignore_errors=True))
                 for name, m in models.items()]
    return measure(variants, repeats, warmup=True)


def _transfer(paths: dict[str, Path], sizes: dict[str, int], seed: int) -> dict[str, Any]:
    """Fashion-MNIST accuracy of logreg and SVM on fp32 and on int8 features."""
    from featurestore import FeatureModel

    models = {name: FeatureModel(path, device="cpu") for name, path in paths.items()}
    prep = models["fp32"].spec.preprocessing
    train_x, train_y = _fashion_mnist("train", sizes["train"], prep)
    test_x, test_y = _fashion_mnist("test", sizes["test"], prep)
    feats = {name: (_features(m, train_x), _features(m, test_x)) for name, m in models.items()}
    accuracy = {head: {name: _accuracy(head, (tr, train_y), (te, test_y), seed) for name, (tr, te) in feats.items()}
                for head in ("logreg", "svm")}
    return {"accuracy": accuracy,
            "loss_points": {head: 100 * (a["fp32"] - a["int8"]) for head, a in accuracy.items()},
            "feature_cosine": _cosine(feats["fp32"][1], feats["int8"][1]), "train": len(train_y),
            "test": len(test_y)}


def _run_backbone(case: BackboneCase, args: argparse.Namespace, sizes: dict[str, int], folder: Path,
                  workdir: Path, repeats: int) -> dict[str, Any]:
    from featurestore.cpu import choose_precision, isa_flags

    fp32_path = exported_model(case, "last", args.cache_dir)
    int8_path, spec, quantize_s = _int8(case, fp32_path, sizes["calibration"], workdir)
    paths = {"fp32": fp32_path, "int8": int8_path}
    isa = _isa_rows(paths, spec, args, sizes, folder, workdir, repeats)
    if args.isa_only:
        return {"backbone": case.name, "random_init": case.random_init, "isa": isa}
    stats = _speed(case, paths, folder, repeats, args.threads, workdir)
    bf16 = next(name for name in stats if name.startswith("torch bf16"))
    q = spec.quantization
    auto, reason = choose_precision(isa_flags(), q.cosine)
    out: dict[str, Any] = {
        "backbone": case.name, "random_init": case.random_init, "variants": stats,
        "quantization": {"mode": q.mode, "method": q.method, "percentile": q.percentile,
                         "bias_correction": q.bias_correction, "op_types": list(q.op_types),
                         "float_nodes": list(q.float_nodes), "cosine": q.cosine, "calibration_count": q.calibration_count,
                         "seconds": quantize_s},
        "auto": {"precision": auto, "reason": reason},
        "ratios": {"int8/fp32 onnxruntime": speed_ratio(stats, "onnxruntime int8", "onnxruntime fp32"),
                   "extract int8/extract fp32": speed_ratio(stats, "extract int8", "extract fp32"),
                   "extract int8/torch bf16": speed_ratio(stats, "extract int8", bf16),
                   "onnxruntime int8/torch bf16": speed_ratio(stats, "onnxruntime int8", bf16)},
    }
    if isa is not None:
        out["isa"] = isa
    if not case.random_init and sizes["train"] > 0 and sizes["test"] > 0:
        out["transfer"] = _transfer(paths, sizes, args.seed)
    return out


def _isa_rows(paths: dict[str, Path], spec: Any, args: argparse.Namespace, sizes: dict[str, int], folder: Path,
              workdir: Path, repeats: int) -> list[dict[str, Any]] | None:
    """onnxruntime fp32 vs int8 under each instruction-set mask (:mod:`benchmarks._isa`), or None."""
    from featurestore import decode_image

    from ._isa import measure_isa

    if args.isa_shim is None:
        return None
    prep = spec.preprocessing
    speed = np.stack([decode_image(f.read_bytes(), prep) for f in sorted(folder.glob("*.jpg"))])
    held, _ = _fashion_mnist("test", sizes["isa_cosine"], prep)
    return measure_isa(args.isa_shim, paths, speed, held, args.threads, repeats, workdir)


def _targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flags = " ".join(cpu_info()["flags"])
    out = []
    for r in results:
        name, ratios = r["backbone"], r["ratios"]
        rates = {k: v["rate"] for k, v in r["variants"].items()}
        cos = min(r["quantization"]["cosine"].values()) if r["quantization"]["cosine"] else float("nan")
        if name in ("mobilenet_v2", "resnet50"):
            s = ratios["int8/fp32 onnxruntime"]
            out.append(evaluate(
                f"quant.speedup.{name}", s["value"], paired_range=(s["paired_min"], s["paired_max"]),
                note=f"onnxruntime fp32 {rates['onnxruntime fp32']:.1f} img/s, int8 {rates['onnxruntime int8']:.1f} "
                     f"img/s; CPU flags {flags}; int8 cosine to fp32 {cos:.4f}."))
        if name in VS_BF16:
            s = ratios["extract int8/torch bf16"]
            bf16 = next(k for k in rates if k.startswith("torch bf16"))
            out.append(evaluate(
                VS_BF16[name], s["value"], paired_range=(s["paired_min"], s["paired_max"]),
                note=f"extract int8 {rates['extract int8']:.1f} img/s (JPEG folder to store), {bf16} "
                     f"{rates[bf16]:.1f} img/s (pre-decoded, normalised input); CPU flags {flags}."))
        if "transfer" in r and name in TRANSFER:
            t = r["transfer"]
            worst = max(t["loss_points"], key=lambda head: abs(t["loss_points"][head]))
            acc = "; ".join(f"{head} fp32 {a['fp32']:.4f}, int8 {a['int8']:.4f}" for head, a in t["accuracy"].items())
            out.append(evaluate(
                f"quant.transfer_loss.{name}", abs(t["loss_points"][worst]),
                note=f"{acc} ({t['train']} train / {t['test']} test images, one fit each; the larger difference, "
                     f"{worst}'s, is the measure: int8 features are to give fp32's accuracy, not another); mean "
                     f"cosine of int8 to fp32 test features {t['feature_cosine']:.4f}."))
    return out


def _tables(results: list[dict[str, Any]], repeats: int, threads: int, images: int) -> list[dict[str, Any]]:
    speed_rows = []
    for r in results:
        if "variants" not in r:
            continue
        int8_rate = r["variants"]["onnxruntime int8"]["rate"]
        for name, st in r["variants"].items():
            speed_rows.append([r["backbone"], name, f"{st['rate']:.1f} ±{50 * st['spread']:.0f}%",
                               f"{int8_rate / st['rate']:.2f}x" if name != "onnxruntime int8" else "-"])
    timed = [r for r in results if "variants" in r]
    summary = [[r["backbone"], ratio_cell(r["ratios"]["int8/fp32 onnxruntime"]),
                ratio_cell(r["ratios"]["extract int8/extract fp32"]), ratio_cell(r["ratios"]["extract int8/torch bf16"]),
                f"{min(r['quantization']['cosine'].values()):.4f}" if r["quantization"]["cosine"] else "-",
                r["quantization"]["mode"], r["auto"]["precision"]] for r in timed]
    tables = [] if not timed else [
        table(f"images/s, batch {BATCH}, {threads} threads (torch, onnxruntime), {images} JPEGs, median of {repeats} "
              "(±half-spread); torch and onnxruntime on pre-decoded input, extract end to end",
              ["backbone", "variant", "img/s", "onnxruntime int8 / this"], speed_rows),
        table("int8 summary: paired speed ratios (median, per-repeat range), the int8 export's min cosine to fp32 "
              "(held-back calibration images) and what `--precision auto` picks on this CPU",
              ["backbone", "int8/fp32 onnxruntime", "extract int8/fp32", "extract int8 / torch bf16", "cosine", "mode",
               "auto"], summary),
    ]
    isa = [[r["backbone"], row["isa"], " ".join(f for f in row["flags"] if f in _INT8_SHOWN) or "none",
            f"{row['fp32']:.1f}", f"{row['int8']:.1f}", ratio_cell(row["ratio"]), f"{min(row['cosine'].values()):.4f}",
            row["auto"]] for r in results for row in r.get("isa") or ()]
    if isa:
        isa_repeats = sorted({row.get("repeats", repeats) for r in results for row in r.get("isa") or ()})
        tables.append(table(
            f"int8 by the instruction set onnxruntime sees (CPUID extensions hidden in a child process, "
            f"benchmarks/_isa.py): images/s, batch {BATCH}, {threads} threads, median of "
            f"{'/'.join(map(str, isa_repeats))}; cosine: int8's "
            "mean cosine to fp32 under the same mask, held-back Fashion-MNIST test images",
            ["backbone", "ISA", "int8 extensions seen", "fp32 img/s", "int8 img/s", "int8/fp32", "cosine",
             "auto picks"], isa))
    transfer = [[r["backbone"], head, f"{a['fp32']:.4f}", f"{a['int8']:.4f}", f"{r['transfer']['loss_points'][head]:+.2f}",
                 f"{r['transfer']['train']} / {r['transfer']['test']}"]
                for r in results if "transfer" in r for head, a in r["transfer"]["accuracy"].items()]
    if transfer:
        tables.append(table("Fashion-MNIST transfer accuracy, fp32 vs int8 features (standardised; logreg, RBF SVM)",
                            ["backbone", "head", "fp32", "int8", "loss (points)", "train / test"], transfer))
    return tables


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Quantise and measure every backbone; return the results document."""
    from ._images import jpeg_folder

    args.backbones = args.backbones or (["mobilenet_v2"] if args.quick else list(CASES))
    unknown = [name for name in args.backbones if name not in CASES]
    if unknown:
        raise SystemExit(f"unknown backbone(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    quick = {"train": 300, "test": 200, "calibration": 32, "speed": 64, "isa_cosine": 64}
    full = {"train": 10000, "test": 10000, "calibration": 128, "speed": 128, "isa_cosine": 512}
    sizes = {k: v if (v := getattr(args, k, None)) is not None else (quick if args.quick else full)[k] for k in full}
    repeats = repeats_for(args)
    args.isa_shim, isa_why = (None, "--no-isa") if args.no_isa else build_shim(args.cache_dir)
    if args.isa_only and args.isa_shim is None:
        raise SystemExit(f"--isa-only: the instruction-set masks cannot run here: {isa_why}")
    folder, folder_info = jpeg_folder(args.cache_dir, sizes["speed"], [(320, 240), (500, 375)], args.seed)
    results = []
    with scratch_dir(args, "quant") as workdir:
        for name in args.backbones:
            results.append(_run_backbone(CASES[name], args, sizes, folder, workdir, repeats))
            r = results[-1]
            for row in r.get("isa") or ():
                print(f"  {name} as {row['isa']}: onnxruntime int8/fp32 {row['ratio']['value']:.2f}x, cosine "
                      f"{min(row['cosine'].values()):.4f}, auto -> {row['auto']}", flush=True)
            if "variants" in r:
                print(f"  {name}: " + ", ".join(f"{k} {v['rate']:.1f}" for k, v in r["variants"].items())
                      + f"; auto -> {r['auto']['precision']}", flush=True)
    cpu = cpu_info()
    notes = [f"CPU {cpu['model']}, flags {' '.join(cpu['flags']) or 'unknown'}, {cpu['usable_cores']} usable cores; "
             f"load average {os.getloadavg()[0]:.2f} at the end. torch takes input already normalised (float NCHW), "
             "onnxruntime uint8 NHWC (it normalises in-graph); extract decodes the JPEGs itself."]
    notes += [f"{r['backbone']}: --precision auto -> {r['auto']['reason']}" for r in results if "auto" in r]
    notes.append(ISA_NOTE if args.isa_shim is not None else f"No instruction-set masks: {isa_why}.")
    return {
        "parameters": {"backbones": args.backbones, **sizes, "batch": BATCH, "threads": args.threads,
                       "images": folder_info, "cpu": cpu, "calibration_source": "fashion-mnist:train",
                       "isa_masks": None if args.isa_shim is None else list(MASKS), "isa_only": args.isa_only},
        "results": results, "targets": _targets([r for r in results if "variants" in r]), "notes": notes,
        "tables": _tables(results, repeats, args.threads, sizes["speed"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("quant", __doc__.splitlines()[0])
    parser.add_argument("--backbones", type=lambda s: [b for b in s.split(",") if b],
                        help=f"comma-separated (default: {','.join(CASES)}; mobilenet_v2 with --quick)")
    parser.add_argument("--train", type=int, help="Fashion-MNIST training images of the transfer heads "
                                                  "(default: 10000; 300 with --quick; 0 skips transfer accuracy)")
    parser.add_argument("--test", type=int, help="Fashion-MNIST test images (default: 10000; 200 with --quick)")
    parser.add_argument("--calibration", type=int, help="calibration images (default: 128, the export's; 32 with "
                                                        "--quick)")
    parser.add_argument("--speed", type=int, help="JPEGs of each timed pass (default: 128; 64 with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default: 2)")
    parser.add_argument("--no-isa", action="store_true",
                        help="skip onnxruntime fp32 vs int8 with VNNI (and AVX-512) hidden from CPUID")
    parser.add_argument("--isa-only", action="store_true",
                        help="only the instruction-set comparison (no torch, extract or transfer)")
    add_cache_dir(parser, "exported models, the JPEG folder and the compiled CPUID mask")
    args = parse_args(parser, argv)
    return run_and_report("quant", args, run, show_notes=True)


if __name__ == "__main__":
    raise SystemExit(main())
