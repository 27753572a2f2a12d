"""int8 against fp32 in onnxruntime as a CPU without VNNI (or without AVX-512) would run them.

``--precision auto`` keeps fp32 on a CPU without native int8 dot products. To show why on a
machine that has them, :func:`measure_isa` runs the fp32 and int8 models in a child process
whose CPUID hides extensions (``cpuid_mask.c``, preloaded): onnxruntime reads CPUID once when
it loads and picks its kernels by what it sees, so the child runs the kernels of an AVX-512 CPU
without VNNI, or of an AVX2-only CPU, on this machine's cores. What the masks do not change:
clock, caches and memory are this machine's, so the ratios speak for the kernels, not for any
particular older CPU.

The child (``python -m benchmarks._isa``) times fp32 and int8 passes over the same images,
interleaved, and measures int8's mean cosine to fp32 per output on held-back Fashion-MNIST
images, under the mask; it reports the extensions it saw, read through the same CPUID.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.cpu import cpuinfo_flags

__all__ = ["MASKS", "build_shim", "measure_isa"]

#: What the child is to look like: a label and the ``CPUID_MASK`` value (empty: nothing hidden).
MASKS: dict[str, str] = {"native": "", "no VNNI (AVX-512)": "vnni", "AVX2 only": "avx512"}
_SOURCE = Path(__file__).with_name("cpuid_mask.c")
#: (register index in cpuid_mask_leaf7's output, bit, flag as /proc/cpuinfo names it)
_LEAF7 = ((0, 5, "avx2"), (0, 16, "avx512f"), (0, 30, "avx512bw"), (0, 31, "avx512vl"), (1, 11, "avx512_vnni"),
          (3, 4, "avx_vnni"), (3, 5, "avx512_bf16"), (2, 24, "amx_tile"), (2, 25, "amx_int8"), (2, 22, "amx_bf16"))
#: What each mask hides (``cpuid_mask.c``), as /proc/cpuinfo names it, among the flags of :data:`_LEAF7`.
_HIDDEN = {"vnni": ("avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"),
           "avx512": ("avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "avx512f", "avx512bw", "avx512vl",
                      "avx512_bf16")}
_ROOT = Path(__file__).resolve().parent.parent
BATCH = 32


def build_shim(cache_dir: Path) -> tuple[Path | None, str]:
    """The compiled ``cpuid_mask.c`` in ``cache_dir`` (built once), or None and why it cannot run here."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None, f"hiding CPUID extensions needs Linux on x86-64, not {sys.platform} {platform.machine()}"
    if "cpuid_fault" not in cpuinfo_flags():
        return None, "this CPU (or its hypervisor) has no CPUID faulting (no cpuid_fault flag in /proc/cpuinfo)"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler (cc) to build benchmarks/cpuid_mask.c"
    key = hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:16]
    out = cache_dir / f"cpuid_mask-{key}.so"
    if not out.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        done = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(_SOURCE)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            return None, f"{compiler} could not build {_SOURCE.name}: {last}"
        tmp.replace(out)
    done = _run_masked(out, "avx512", [sys.executable, "-c", "import sys; from benchmarks._isa import _seen_flags; "
                                       "print(' '.join(_seen_flags(sys.argv[1])))", str(out)])
    if done.returncode != 0:
        return None, f"a process with {out.name} preloaded failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    still = sorted(set(done.stdout.split()) & set(_HIDDEN["avx512"]))
    if still:  # e.g. arch_prctl refused (seccomp): CPUID does not fault, so nothing is hidden
        return None, f"CPUID faulting did not take effect here: a masked process still saw {' '.join(still)}"
    return out, ""


def _run_masked(shim: Path, mask: str, cmd: list[str]) -> subprocess.CompletedProcess:
    """``cmd`` with ``shim`` preloaded and ``CPUID_MASK=mask``, from the repository root."""
    env = dict(os.environ, CPUID_MASK=mask,
               LD_PRELOAD=" ".join(p for p in (str(shim), os.environ.get("LD_PRELOAD", "")) if p))
    env.pop("PYTHONFAULTHANDLER", None)  # its SIGSEGV handler would take the faulting CPUIDs
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=_ROOT)


def _seen_flags(shim: Path) -> list[str]:
    """The leaf-7 extensions this process's CPUID reports (masked where the shim is active)."""
    lib = ctypes.CDLL(str(shim))
    regs = (ctypes.c_uint32 * 4)()
    lib.cpuid_mask_leaf7(regs)
    return [name for reg, bit, name in _LEAF7 if regs[reg] >> bit & 1]


def measure_isa(shim: Path, paths: dict[str, Path], speed_images: np.ndarray, cosine_images: np.ndarray,
                threads: int, repeats: int, workdir: Path) -> list[dict[str, Any]]:
    """One child per :data:`MASKS` entry: what it saw, fp32/int8 images/s, their paired ratio, int8's cosine."""
    from featurestore.cpu import choose_precision

    speed_file, cosine_file = workdir / "isa-speed.npy", workdir / "isa-cosine.npy"
    np.save(speed_file, speed_images)
    np.save(cosine_file, cosine_images)
    rows = []
    for label, mask in MASKS.items():
        cmd = [sys.executable, "-m", "benchmarks._isa", str(paths["fp32"]), str(paths["int8"]), str(speed_file),
               str(cosine_file), "--shim", str(shim), "--threads", str(threads), "--repeats", str(repeats)]
        done = _run_masked(shim, mask, cmd)
        if done.returncode != 0:
            raise RuntimeError(f"the {label} child failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        shown = sorted(set(row["flags"]) & set(_HIDDEN.get(mask, ())))
        if shown:
            raise RuntimeError(f"the {label} child still saw {' '.join(shown)}: its CPUID mask did not take effect")
        row["auto"], row["reason"] = choose_precision(row["flags"], row["cosine"])
        rows.append({"isa": label, "mask": mask, "repeats": repeats, **row})
    return rows


def _child(argv: list[str] | None = None) -> int:
    from export.quantize import output_cosine
    from featurestore import FeatureModel

    from ._common import Variant, measure, speed_ratio

    parser = argparse.ArgumentParser(prog="python -m benchmarks._isa")
    parser.add_argument("fp32", type=Path)
    parser.add_argument("int8", type=Path)
    parser.add_argument("speed", type=Path)
    parser.add_argument("cosine", type=Path)
    parser.add_argument("--shim", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    flags = _seen_flags(args.shim)
    models = {name: FeatureModel(path, device="cpu", intra_op_threads=args.threads)
              for name, path in (("fp32", args.fp32), ("int8", args.int8))}
    speed, held = np.load(args.speed), np.load(args.cosine)

    def run_all(model: Any, images: np.ndarray) -> dict[str, np.ndarray]:
        parts = [model.run(images[i:i + BATCH]) for i in range(0, len(images), BATCH)]
        return {key: np.concatenate([p[key] for p in parts]).reshape(len(images), -1) for key in parts[0]}

    # the measure the export records in its spec, here with the kernels this process's CPUID picks
    cosine = output_cosine(args.fp32.read_bytes(), args.int8.read_bytes(), models["fp32"].spec, held)
    stats = measure([Variant(f"onnxruntime {name}", lambda _, m=m: run_all(m, speed), len(speed), "img")
                     for name, m in models.items()], args.repeats, warmup=True)
    print(json.dumps({"flags": flags, "fp32": stats["onnxruntime fp32"]["rate"],
                      "int8": stats["onnxruntime int8"]["rate"],
                      "ratio": speed_ratio(stats, "onnxruntime int8", "onnxruntime fp32"), "cosine": cosine,
                      "cosine_images": len(held)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child())
