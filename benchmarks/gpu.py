"""GPU throughput and CPU-GPU feature agreement: onnxruntime CUDA vs torch CUDA eager, fp32 and fp16.

``python -m benchmarks.gpu [--quick] [--backbones resnet50,mobilenet_v2,convnext_tiny]
[--batch-sizes 256,64,512] [--precisions fp16,fp32] [--device auto|cuda|cpu] [--time-budget 300]``

Every backbone is exported with ``layers="last"`` (pooled features), in fp32 and in fp16 (the
exporter's ``precision="fp16"``: normalisation and outputs stay float32). MobileNetV2 uses its
offline ImageNet weights where they are installed, the others seeded random weights
(throughput and agreement do not depend on training; ``parameters.weights`` says which).
Inputs are uint8 ``(N, 224, 224, 3)`` batches in host memory, made once from the seed; every
variant turns one into pooled float32 features in host memory:

- **ort session.run**: ``FeatureModel.run`` without IO binding (numpy in, numpy out);
- **ort io_binding**: ``FeatureModel.run`` through its IO-binding path (one host-to-device copy
  of the uint8 batch, one copy of the features back), the product's default on CUDA;
- **torch eager**: the same weights in torch, ``channels_last``, same precision,
  ``torch.inference_mode()`` and ``cudnn.benchmark``; the uint8 batch is copied to the device,
  normalised there in float32 and cast, and the pooled features are copied back;
- **ort io_binding prefer_nhwc** (diagnostic, target group only): the same IO-binding path over a
  session whose CUDA provider also has ``prefer_nhwc=1``, to measure how much of a gap to torch
  is the memory layout.

Agreement: features of the same images (scikit-image's photos through our decoder, or seeded
noise without scikit-image) from the CPU provider in fp32 vs the device in fp32 and in fp16:
lowest and mean per-image cosine similarity. Host decode: ``decode_image`` of 500x375 JPEGs on
one thread and on all cores, to tell whether the host could feed the measured GPU rates. After
the first backbone (the target one), decoding on the device (``featurestore.device_decode``,
nvJPEG through TorchCodec): its rate and pixel difference from the host decode, then
``extract`` of a JPEG folder end to end with ``decode="host"`` vs ``decode="device"`` and the
cosine of their features (``_gpu_decode.py``).

Without CUDA (no usable CUDAExecutionProvider) the script only writes a results file saying it
was skipped, unless ``--quick`` or ``--device cpu`` asks for a CPU run: every step then runs on
the CPU at tiny sizes, torch in fp32 only (it checks the script; its numbers mean nothing and no
target is reported).

For a one-shot run: a failing variant (out of memory, a missing provider) is recorded and the
run goes on; what has not started after ``--time-budget`` seconds is recorded as skipped; the
JSON is rewritten after every step; a watchdog saves it and exits with status 3 when the run
overruns the budget by ``--grace`` seconds.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ._common import Variant, add_cache_dir, machine_info, make_parser, measure, parse_args, print_tables
from ._common import repeats_for, scratch_dir, write_result
from ._gpu_decode import decode_rates, device_decode, extract_decode_rates, photo_blobs
from ._gpu_report import ORT_BOUND, ORT_NHWC, ORT_RUN, TARGET_GROUP, TORCH, ratios
from ._gpu_run import NAME, Run, describe
from ._models import BACKBONES, BackboneCase, exported_model
from .targets import get_target

__all__ = ["cuda_status", "main", "run"]

DEFAULTS = {"backbones": ["resnet50", "mobilenet_v2", "convnext_tiny"], "batch_sizes": [256, 64, 512],
            "agreement_images": 64, "decode_images": 64, "extract_images": 512}
QUICK_CUDA = {"backbones": ["mobilenet_v2"], "batch_sizes": [64], "agreement_images": 64, "decode_images": 16,
              "extract_images": 128}
QUICK_CPU = {"backbones": ["mobilenet_v2"], "batch_sizes": [2, 4], "agreement_images": 4, "decode_images": 4,
             "extract_images": 6}
_EXTRA_CASES = {"convnext_tiny": BackboneCase("convnext_tiny", random_init=True, nominal_gflop=8.9)}
SKIPPED_TORCH_CPU_FP16 = "skipped: torch's fp16 convolutions on the CPU are far too slow (the CUDA run times them)"
Runner = Callable[[np.ndarray], np.ndarray]


# --- device -------------------------------------------------------------------------------------
def cuda_status() -> tuple[bool, str]:
    """Whether onnxruntime can run on CUDA here (without importing torch), and why not."""
    import onnxruntime as ort

    from featurestore.session import resolve_providers

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, f"onnxruntime {ort.__version__} has no CUDAExecutionProvider"
    if resolve_providers("auto")[0] == "CPUExecutionProvider":
        return False, "onnxruntime offers CUDAExecutionProvider but no NVIDIA GPU answers"
    return True, "CUDA available"


def _gpu_info() -> dict[str, Any]:
    """GPU, driver and library versions (torch is imported here, before any CUDA session)."""
    import onnxruntime as ort

    info: dict[str, Any] = {"onnxruntime": ort.__version__}
    try:
        from onnxruntime.capi import build_and_package_info as build

        info["onnxruntime_cuda_build"] = getattr(build, "cuda_version", None)
    except ImportError:
        pass
    try:
        import torch

        info.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                    torch_cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            info.update(gpu=torch.cuda.get_device_name(0), cudnn=torch.backends.cudnn.version())
    except Exception as exc:  # a broken torch install only costs the baseline
        info["torch_error"] = describe(exc)
    try:
        query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
        done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=15, check=True)
        info["nvidia_smi"] = done.stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# --- models and inputs --------------------------------------------------------------------------
def _case(name: str) -> tuple[BackboneCase, str]:
    """The backbone case for ``name`` and a description of its weights (random if none offline)."""
    from export import get_backbone

    entry = get_backbone(name)
    case = BACKBONES.get(name) or _EXTRA_CASES.get(name) or BackboneCase(
        name, random_init=entry.offline_weights is None, nominal_gflop=0.0)
    if case.random_init:
        return case, "random init (seeded)"
    try:
        path, source = entry.offline_weights()
        if not Path(path).is_file():
            raise FileNotFoundError(path)
        return case, f"pretrained ({source})"
    except Exception as exc:
        weights = f"random init (seeded): no offline weights, {describe(exc)}"
        return dataclasses.replace(case, random_init=True), weights


def _export(case: BackboneCase, precision: str, cache_dir: Path) -> Path:
    """The ``last``-layer export of ``case`` in ``precision``, cached by content like :func:`exported_model`."""
    if precision == "fp32":
        return exported_model(case, "last", cache_dir)
    from export import export_backbone
    from featurestore import read_spec

    from ._models import _export_fingerprint

    key = _export_fingerprint(backbone=case.name, layers="last", random_init=case.random_init, precision=precision)
    path = cache_dir / f"{case.name}-last-{precision}-{key}.onnx"
    if path.is_file():
        read_spec(path)
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    export_backbone(case.name, path, layers="last", random_init=case.random_init, precision=precision)
    return path


def _export_all(cases: list[BackboneCase], state: Run) -> dict[tuple[str, str], Path | str]:
    """Every (backbone, precision) export: a path, or why there is none. Parallel processes when asked."""
    args = state.args
    jobs = [(case, precision) for case in cases for precision in args.precisions]
    out: dict[tuple[str, str], Path | str] = {}
    if args.export_workers > 1 and len(jobs) > 1:
        context = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA state
        with ProcessPoolExecutor(min(args.export_workers, len(jobs)), mp_context=context) as pool:
            futures = {(c.name, p): pool.submit(_export, c, p, args.cache_dir) for c, p in jobs}
            for key, future in futures.items():
                try:
                    out[key] = future.result()
                except Exception as exc:
                    out[key] = f"export failed: {describe(exc)}"
                state.log(f"export {key[0]} {key[1]}: {out[key]}")
        return out
    for case, precision in jobs:
        if state.over_budget():
            out[(case.name, precision)] = "skipped: time budget spent before the export"
            continue
        try:
            out[(case.name, precision)] = _export(case, precision, args.cache_dir)
        except Exception as exc:
            out[(case.name, precision)] = f"export failed: {describe(exc)}"
        state.log(f"export {case.name} {precision}: {out[(case.name, precision)]}")
    return out


def _ort_runner(model) -> Runner:
    return lambda batch: next(iter(model.run(batch).values()))


def _torch_runner(module, prep, device: str, dtype) -> Runner:
    """uint8 host batch -> device, normalised in float32 and cast there, pooled features -> host."""
    import torch

    mean = torch.tensor(prep.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float()  # NHWC strides: channels_last
            x = ((x / 255.0 - mean) / std).to(dtype).contiguous(memory_format=torch.channels_last)
            out = module(x).float().cpu()
        return out.numpy()

    return run


def _with_cuda_options(model, **extra: str):
    """A copy of ``model`` whose session's CUDA provider has ``extra`` options (diagnostics only)."""
    import onnxruntime as ort

    from featurestore.session import CUDA_OPTIONS

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = [("CUDAExecutionProvider", {"device_id": str(model.device_id), **CUDA_OPTIONS, **extra}),
                 "CPUExecutionProvider"]
    twin = copy.copy(model)
    twin.session = ort.InferenceSession(str(model.path), sess_options=options, providers=providers)
    twin.providers = providers
    return twin


def _features(runner: Runner, images: np.ndarray, chunk: int) -> np.ndarray:
    return np.concatenate([runner(images[i:i + chunk]) for i in range(0, len(images), chunk)])


def _agreement(reference: np.ndarray, features: np.ndarray) -> dict[str, float]:
    """Lowest and mean per-image cosine similarity of ``features`` to ``reference``, and the largest
    absolute difference relative to the reference's largest value."""
    if features.shape != reference.shape:
        raise ValueError(f"features of shape {features.shape} vs reference {reference.shape}: not the same layer")
    a, b = reference.astype(np.float64), features.astype(np.float64)
    cosine = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {"min_cosine": float(np.min(cosine)), "mean_cosine": float(np.mean(cosine)),
            "max_abs_diff_rel": float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-30))}


# --- one backbone -------------------------------------------------------------------------------
class _Backbone:
    """One backbone's CPU reference features, timing inputs and torch module, prepared once."""

    def __init__(self, case: BackboneCase, paths: dict[tuple[str, str], Path | str], blobs: list[bytes] | None,
                 state: Run) -> None:
        self.case, self.paths, self.state = case, paths, state
        self.device = state.doc["device"]
        self.entry: dict[str, Any] = {"backbone": case.name, "errors": {}}
        state.add("agreement", self.entry)
        fp32 = paths.get((case.name, "fp32"))
        any_path = next((p for (n, _), p in paths.items() if n == case.name and isinstance(p, Path)), None)
        if any_path is None:
            raise RuntimeError(f"no export of {case.name}: {paths}")
        from featurestore import FeatureModel, decode_image, read_spec

        self.spec = read_spec(any_path)
        rng = np.random.default_rng(state.args.seed)
        self.pool = rng.integers(0, 256, (max(state.args.batch_sizes), *self.spec.input_shape), dtype=np.uint8)
        count = state.args.agreement_images
        if blobs:
            self.images = np.stack([decode_image(blob, self.spec.preprocessing) for blob in (blobs * count)[:count]])
        else:
            self.images = rng.integers(0, 256, (count, *self.spec.input_shape), dtype=np.uint8)
        self.entry.update(images=count, input="photos" if blobs else "seeded uniform noise")
        self.chunk = min(state.args.batch_sizes)  # a batch shape the timing warms up anyway
        self.reference = None
        if isinstance(fp32, Path):
            cpu = FeatureModel(fp32, device="cpu", io_binding=False)
            self.reference = _features(_ort_runner(cpu), self.images, self.chunk)
        self.torch_base = self._torch_base()

    def _torch_base(self):
        try:
            from ._models import torch_twin

            return torch_twin(self.case)
        except Exception as exc:
            self.entry["errors"][TORCH] = describe(exc)
            return None

    def _torch(self, precision: str) -> Runner:
        import torch

        if self.torch_base is None:
            raise RuntimeError(f"no torch module: {self.entry['errors'].get(TORCH)}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} has no CUDA here")
        dtype = torch.float16 if precision == "fp16" else torch.float32
        module = copy.deepcopy(self.torch_base).to(device=self.device, dtype=dtype, memory_format=torch.channels_last)
        return _torch_runner(module.eval(), self.spec.preprocessing, self.device, dtype)

    def _agree(self, key: str, runner: Runner) -> float | None:
        """Record the agreement of ``runner``'s features with the CPU fp32 reference under ``key``."""
        try:
            if self.reference is None:
                raise RuntimeError("no CPU fp32 reference (fp32 export missing)")
            result = _agreement(self.reference, _features(runner, self.images, self.chunk))
        except Exception as exc:
            with self.state.lock:
                self.entry["errors"][key] = describe(exc)
            return None
        with self.state.lock:
            self.entry[key] = result
            self.state.save()
        return result["min_cosine"]

    def precision(self, precision: str) -> None:
        """Agreement and every batch size of one precision."""
        state, name = self.state, self.case.name
        if state.over_budget():
            _skip_groups(state, name, [precision], f"time budget of {state.args.time_budget:g} s spent")
            return
        path = self.paths.get((name, precision))
        runners: dict[str, Runner | str] = {}
        bound = plain = None
        if not isinstance(path, Path):
            runners[ORT_RUN] = runners[ORT_BOUND] = str(path)
        else:
            try:
                bound = self._bound(path)
                plain = copy.copy(bound)
                plain.io_binding = False
                runners[ORT_RUN], runners[ORT_BOUND] = _ort_runner(plain), _ort_runner(bound)
                self._agree(precision, runners[ORT_BOUND])
            except Exception as exc:
                runners[ORT_RUN] = runners[ORT_BOUND] = describe(exc)
        if self.device == "cpu" and precision == "fp16":
            runners[TORCH] = SKIPPED_TORCH_CPU_FP16
        else:
            try:
                runners[TORCH] = self._torch(precision)
                self._agree(f"torch {precision}", runners[TORCH])
            except Exception as exc:
                runners[TORCH] = describe(exc)
        self._diagnose_tf32(precision, bound)
        for bs in state.args.batch_sizes:
            group = {"backbone": name, "precision": precision, "batch_size": bs}
            if state.over_budget():
                group.update(status="skipped", reason=f"time budget of {state.args.time_budget:g} s spent")
            else:
                extra = self._nhwc(bound) if (name, precision, bs) == TARGET_GROUP else {}
                group.update(_group({**runners, **extra}, self.pool[:bs], state))
            state.add("groups", group)
            state.log(_progress(group))
        del runners, bound, plain
        _release(self.device)

    def _bound(self, path: Path):
        """The product's model on the device; on CUDA, one retry after ``onnxruntime.preload_dlls()``."""
        from featurestore import FeatureModel

        bound = FeatureModel(path, device=self.device, io_binding=True)
        if self.device == "cuda" and not bound.on_cuda and _preload_cuda_libraries(self.state):
            bound = FeatureModel(path, device=self.device, io_binding=True)
        if self.device == "cuda" and not bound.on_cuda:
            raise RuntimeError(f"onnxruntime put the session on {bound.session.get_providers()}, not CUDA: "
                               "are CUDA 13's cuBLAS and cuDNN 9 loadable?")
        return bound

    def _nhwc(self, bound) -> dict[str, Runner | str]:
        if bound is None or self.device != "cuda" or not self.state.args.nhwc_check:
            return {}
        try:
            return {ORT_NHWC: _ort_runner(_with_cuda_options(bound, prefer_nhwc="1"))}
        except Exception as exc:
            return {ORT_NHWC: describe(exc)}

    def _diagnose_tf32(self, precision: str, bound) -> None:
        """When CUDA fp32 misses the agreement target, measure it again with TF32 off."""
        fp32 = self.entry.get("fp32")
        if precision != "fp32" or bound is None or self.device != "cuda" or fp32 is None:
            return
        if get_target("gpu.agreement.fp32").passes(fp32["min_cosine"]):
            return
        try:
            self._agree("fp32 use_tf32=0", _ort_runner(_with_cuda_options(bound, use_tf32="0")))
        except Exception as exc:
            self.entry["errors"]["fp32 use_tf32=0"] = describe(exc)


def _preload_cuda_libraries(state: Run) -> bool:
    """Once per run, when a session fell back to the CPU: load CUDA and cuDNN the way onnxruntime offers."""
    import onnxruntime as ort

    if state.doc["parameters"].get("preload_dlls") is not None or not hasattr(ort, "preload_dlls"):
        return False
    try:
        ort.preload_dlls()
        state.doc["parameters"]["preload_dlls"] = "called after a session fell back to the CPU"
    except Exception as exc:
        state.doc["parameters"]["preload_dlls"] = f"failed: {describe(exc)}"
    state.note(f"onnxruntime did not start on CUDA; preload_dlls: {state.doc['parameters']['preload_dlls']}")
    return True


def _release(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


# --- one group ----------------------------------------------------------------------------------
def _warm(runners: dict[str, Runner | str], batch: np.ndarray, errors: dict[str, str],
          device: str) -> dict[str, float]:
    """Two untimed calls per runner (the first picks cuDNN algorithms); seconds of the second call."""
    seconds = {}
    for name, runner in runners.items():
        if isinstance(runner, str):
            errors[name] = runner
            continue
        try:
            runner(batch)
            start = time.perf_counter()
            runner(batch)
            seconds[name] = time.perf_counter() - start
        except Exception as exc:
            errors[name] = describe(exc)
            _release(device)
    return seconds


def _group(runners: dict[str, Runner | str], batch: np.ndarray, state: Run) -> dict[str, Any]:
    """Time the runners that survive their warm-up on ``batch``, interleaved."""
    errors: dict[str, str] = {}
    warm = _warm(runners, batch, errors, state.doc["device"])
    if not warm:
        return {"status": "failed", "errors": errors}
    calls = 1
    if state.doc["device"] == "cuda":  # enough batches per timed call for ~target_s
        calls = int(np.clip(round(state.args.call_seconds / max(max(warm.values()), 1e-6)), 1, 64))
    variants = []
    for name in warm:
        def timed(_, runner=runners[name]) -> None:
            for _ in range(calls):
                runner(batch)
        variants.append(Variant(name, timed, calls * len(batch), "img"))
    try:
        stats = measure(variants, repeats_for(state.args))
    except Exception as exc:
        return {"status": "failed", "errors": {**errors, "measure": describe(exc)}, "warm_call_s": warm}
    return {"status": "measured", "batches_per_call": calls, "variants": stats, "ratios": ratios(stats),
            "errors": errors, "warm_call_s": warm}


def _skip_groups(state: Run, backbone: str, precisions: list[str], reason: str) -> None:
    for precision in precisions:
        for bs in state.args.batch_sizes:
            group = {"backbone": backbone, "precision": precision, "batch_size": bs, "status": "skipped",
                     "reason": reason}
            state.add("groups", group)
            state.log(_progress(group))


def _progress(group: dict[str, Any]) -> str:
    head = f"{group['backbone']} {group['precision']} batch {group['batch_size']}: {group['status']}"
    rates = ", ".join(f"{n} {s['rate']:.0f} img/s" for n, s in group.get("variants", {}).items())
    errors = "; ".join(f"{n}: {e[:120]}" for n, e in group.get("errors", {}).items())
    return " ".join(filter(None, [head, rates and f"({rates})", errors and f"[errors: {errors}]",
                                  group.get("reason")]))


# --- entry point --------------------------------------------------------------------------------
def _resolve_sizes(args: argparse.Namespace, device: str) -> None:
    defaults = DEFAULTS if not (args.quick or device == "cpu") else (QUICK_CPU if device == "cpu" else QUICK_CUDA)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, list(value) if isinstance(value, list) else value)
    if device == "cpu" and args.repeats is None:
        args.repeats = 1
    if args.export_workers is None:
        cores = len(os.sched_getaffinity(0))
        args.export_workers = min(6, cores // 2) if device == "cuda" and cores >= 8 else 1


def _document(device: str | None, status: str, parameters: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    return {"status": status, "device": device, "parameters": parameters, "groups": [], "agreement": [],
            "host_decode": None, "device_decode": None, "extract_decode": None, "notes": notes, "targets": [],
            "tables": []}


def _host_decode(paths: dict[tuple[str, str], Path | str], state: Run) -> list[bytes] | None:
    """Measure the host's decode rate on the photos (recorded in ``state``); return the photos."""
    args = state.args
    blobs, source = photo_blobs(args.cache_dir, max(args.agreement_images, args.decode_images), args.seed)
    first = next((p for p in paths.values() if isinstance(p, Path)), None)
    if not blobs or first is None:
        state.note(f"host decode not measured: {source if not blobs else 'no export'}")
        return blobs
    from featurestore import read_spec

    cores = len(os.sched_getaffinity(0))
    decode = decode_rates(blobs[:args.decode_images], read_spec(first).preprocessing, cores, repeats_for(args))
    with state.lock:
        state.doc["host_decode"] = dict(decode, source=source)
        state.save()
    return blobs


def run(args: argparse.Namespace, state: Run) -> None:
    """Export, measure and save into ``state`` step by step (the device is ``state.doc['device']``)."""
    cases, weights = zip(*(_case(name) for name in args.backbones))
    with state.lock:
        state.doc["parameters"]["weights"] = dict(zip(args.backbones, weights))
        state.save()
    state.log(f"exporting {len(cases)} backbone(s) x {len(args.precisions)} precision(s), "
              f"{args.export_workers} worker(s)")
    paths = _export_all(list(cases), state)
    with state.lock:
        state.doc["parameters"]["exports"] = {f"{n} {p}": str(v) for (n, p), v in paths.items()}
    if state.doc["device"] == "cuda":
        with state.lock:
            state.doc["parameters"]["gpu"] = _gpu_info()  # imports torch before the first CUDA session
            state.save()
        import torch

        torch.backends.cudnn.benchmark = True
    blobs = _host_decode(paths, state)
    for index, case in enumerate(cases):
        if state.over_budget():
            _skip_groups(state, case.name, args.precisions, f"time budget of {args.time_budget:g} s spent")
        else:
            _measure_backbone(case, paths, blobs, state)
        if index == 0 and args.device_decode:  # the target backbone: can decoding keep up with it?
            _decode_on_device(case, paths, blobs, state)


def _measure_backbone(case: BackboneCase, paths: dict[tuple[str, str], Path | str], blobs: list[bytes] | None,
                      state: Run) -> None:
    try:
        backbone = _Backbone(case, paths, blobs, state)
    except Exception as exc:
        state.note(f"{case.name}: not measured: {describe(exc)}")
        _skip_groups(state, case.name, state.args.precisions, f"no model: {describe(exc)}")
        return
    for precision in state.args.precisions:
        backbone.precision(precision)
    del backbone
    _release(state.doc["device"])


def _decode_on_device(case: BackboneCase, paths: dict[tuple[str, str], Path | str], blobs: list[bytes] | None,
                      state: Run) -> None:
    """Device decode rate and pixels, then ``extract`` host vs device decode with ``case`` (fp16 if exported)."""
    from featurestore import read_spec
    from featurestore.device_decode import device_decode_available

    args, device = state.args, state.doc["device"]
    model = next((p for p in (paths.get((case.name, x)) for x in ("fp16", "fp32")) if isinstance(p, Path)), None)
    reason = ("time budget spent" if state.over_budget() else "no export" if model is None
              else "no photos" if not blobs else None if device_decode_available() else
              "TorchCodec is not installed (pip install 'featurestore[gpu-decode]')")
    if reason is not None:
        state.note(f"device decode not measured: {reason}")
        return
    batch = TARGET_GROUP[2] if device == "cuda" else min(args.batch_sizes)
    steps = {"device_decode": lambda: device_decode(blobs[:args.decode_images], read_spec(model).preprocessing,
                                                    device, min(batch, 64), repeats_for(args)),
             "extract_decode": lambda: _extract_decode(model, batch)}

    def _extract_decode(model: Path, batch: int) -> dict[str, Any]:
        with scratch_dir(args, "gpu-extract") as workdir:
            return extract_decode_rates(model, args.cache_dir, workdir, images=args.extract_images, batch=batch,
                                        device=device, repeats=repeats_for(args), seed=args.seed)

    for key, step in steps.items():
        if state.over_budget():
            result: dict[str, Any] = {"error": f"skipped: time budget of {args.time_budget:g} s spent"}
        else:
            try:
                result = step()
            except Exception as exc:
                result = {"error": describe(exc)}
        with state.lock:
            state.doc[key] = result
            state.save()
        state.log(f"{key}: {result.get('error') or 'measured'}")
        _release(device)


def _parser() -> argparse.ArgumentParser:
    parser = make_parser(NAME, __doc__.splitlines()[0])
    names = lambda s: [b for b in s.split(",") if b]  # noqa: E731
    parser.add_argument("--backbones", type=names,
                        help="comma-separated, run in this order (default: resnet50,mobilenet_v2,convnext_tiny; "
                             "mobilenet_v2 with --quick or on the CPU)")
    parser.add_argument("--batch-sizes", type=lambda s: [int(b) for b in names(s)],
                        help="comma-separated, run in this order (default: 256,64,512; 64 with --quick; "
                             "2,4 on the CPU)")
    parser.add_argument("--precisions", type=names, default=["fp16", "fp32"], help="default: fp16,fp32")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="auto: CUDA when available; without it only --quick runs (on the CPU), "
                             "otherwise the run is recorded as skipped")
    parser.add_argument("--agreement-images", type=int, help="images compared CPU vs device (default: 64; 4 on CPU)")
    parser.add_argument("--decode-images", type=int,
                        help="JPEGs for the host and device decode rates (default: 64; 4 on CPU)")
    parser.add_argument("--extract-images", type=int,
                        help="JPEGs (500x375 and 1600x1200) extracted end to end with host vs device decode "
                             "(default: 512; 6 on CPU)")
    parser.add_argument("--time-budget", type=float, default=300.0,
                        help="seconds after which what has not started is skipped (default: 300)")
    parser.add_argument("--grace", type=float, default=90.0,
                        help="seconds past the budget after which the watchdog saves and exits (default: 90)")
    parser.add_argument("--call-seconds", type=float, default=0.2,
                        help="on CUDA, batches per timed call are chosen to take about this long (default: 0.2)")
    parser.add_argument("--export-workers", type=int,
                        help="parallel export processes (default: up to 6 on a CUDA machine with >= 8 cores, else 1)")
    parser.add_argument("--device-decode", action=argparse.BooleanOptionalAction, default=True,
                        help="after the first backbone, time decoding on the device and extract host vs device "
                             "decode (needs featurestore[gpu-decode])")
    parser.add_argument("--nhwc-check", action=argparse.BooleanOptionalAction, default=True,
                        help="also time a prefer_nhwc=1 session in the target group (resnet50 fp16 batch 256)")
    add_cache_dir(parser, "exported models and JPEGs")
    return parser


def _parameters(args: argparse.Namespace, device: str) -> dict[str, Any]:
    return {"device": device, "backbones": args.backbones, "batch_sizes": args.batch_sizes,
            "precisions": args.precisions, "agreement_images": args.agreement_images,
            "decode_images": args.decode_images, "extract_images": args.extract_images,
            "time_budget_s": args.time_budget,
            "call_seconds": args.call_seconds, "layers": "last",
            "input": "uint8 NHWC in host memory, seeded uniform noise (speed does not depend on content)",
            "torch": "eager, channels_last, inference_mode, cudnn.benchmark; normalised on the device"}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parse_args(parser, argv)
    unknown = [p for p in args.precisions if p not in ("fp32", "fp16")]
    if unknown:
        parser.error(f"unknown precision(s) {', '.join(unknown)}; choose from fp32, fp16")
    machine = machine_info()
    cuda, why = cuda_status() if args.device != "cpu" else (False, "--device cpu")
    if not cuda and args.device != "cpu" and not (args.device == "auto" and args.quick):
        doc = _document(None, "skipped", {"reason": why, "device_requested": args.device},
                        [f"skipped: no CUDA ({why}); run on a machine with an NVIDIA GPU and onnxruntime-gpu"])
        print(f"benchmarks.gpu skipped: {why}", file=sys.stderr)
        print(f"wrote {write_result(args, NAME, doc, machine)}")
        return 1 if args.device == "cuda" else 0
    device = "cuda" if cuda else "cpu"
    _resolve_sizes(args, device)
    try:
        from export import get_backbone

        for name in args.backbones:
            get_backbone(name)
    except KeyError as exc:
        parser.error(str(exc.args[0] if exc.args else exc))
    notes = [] if cuda else [f"CUDA not available ({why}): every step ran on the CPU at tiny sizes to check "
                             "the script; the numbers mean nothing and no GPU target is reported"]
    state = Run(args, machine, _document(device, "running", _parameters(args, device), notes))
    state.start_watchdog()
    try:
        run(args, state)
        counts = {s: sum(g["status"] == s for g in state.doc["groups"]) for s in ("measured", "failed", "skipped")}
        state.doc["status"] = next((s for s in counts if counts[s]), "skipped")
        state.note("groups: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    except BaseException as exc:
        state.doc["status"] = "failed"
        state.doc["notes"].append(f"run failed: {describe(exc)}")
        raise
    finally:
        state.stop_watchdog()
        path = state.save()
        print_tables(state.doc["tables"])
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
