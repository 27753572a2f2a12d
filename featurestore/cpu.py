"""The CPU's instruction-set extensions, and whether int8 features pay on it.

:func:`isa_flags` reads the extensions that decide how fast fp32, bf16 and int8 inference run
(from ``/proc/cpuinfo`` on Linux; an empty tuple elsewhere). :func:`choose_precision` is the
rule of ``export --precision auto``: int8 where the CPU multiplies int8 natively (VNNI or AMX)
and the int8 model's features are close enough to fp32's, fp32 otherwise, with the reason in
one line. It takes the flags and the cosine as arguments, so either branch can be checked on
any machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["AUTO_MIN_COSINE", "INT8_FLAGS", "ISA_FLAGS", "Int8KernelWarning", "choose_precision", "cpuinfo_flags",
           "int8_kernel_warning", "isa_flags", "mixed_int8_kernels_warning"]

#: Extensions recorded (in this order) where the CPU has them: x86 vector widths, fused
#: multiply-add, the bf16 and int8 dot products (VNNI), the AMX tiles; Arm's SIMD, dot product
#: and matrix extensions.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "bf16", "sve")
#: Extensions with native int8 dot products on x86. Without them onnxruntime's uint8 x int8 kernels
#: sum pairs in 16 bits (VPMADDUBSW), which saturates: with VNNI hidden from onnxruntime on one
#: CPU, int8's mean cosine to fp32 fell from 0.986 to 0.975 (MobileNetV2) and from 0.993 to 0.953
#: (EfficientNet-Lite0), and its speed-up over fp32 shrank (docs/int8.md).
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: The least mean cosine to fp32, on every output, at which ``--precision auto`` takes int8.
AUTO_MIN_COSINE = 0.999
_CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """Every flag of the CPU's first ``flags`` (x86) or ``Features`` (Arm) line.

    Parameters
    ----------
    cpuinfo : str, optional
        Text in ``/proc/cpuinfo``'s format; default: this machine's ``/proc/cpuinfo``.

    Returns
    -------
    frozenset of str
        Empty where the file is absent (not Linux) or unreadable, or has no such line.
    """
    if cpuinfo is None:
        cpuinfo = ""
        with contextlib.suppress(OSError, UnicodeDecodeError):
            cpuinfo = _CPUINFO.read_text()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def isa_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The CPU's extensions among :data:`ISA_FLAGS`.

    Parameters
    ----------
    cpuinfo : str, optional
        Text in ``/proc/cpuinfo``'s format (its first ``flags`` or ``Features`` line is read);
        default: this machine's ``/proc/cpuinfo``.

    Returns
    -------
    tuple of str
        In :data:`ISA_FLAGS` order; empty where the file is absent (not Linux) or unreadable.
    """
    found = cpuinfo_flags(cpuinfo)
    return tuple(flag for flag in ISA_FLAGS if flag in found)


def choose_precision(flags: Iterable[str], cosine: Mapping[str, float] | None) -> tuple[str, str]:
    """int8 or fp32 for this CPU and this int8 model, and why, in one line.

    Parameters
    ----------
    flags : iterable of str
        The CPU's extensions (:func:`isa_flags`).
    cosine : mapping of str to float, optional
        Per output, the int8 model's mean cosine similarity to fp32 (the spec's
        ``quantization.cosine``); None or empty when not measured.

    Returns
    -------
    (str, str)
        ``'int8'`` when ``flags`` include one of :data:`INT8_FLAGS` and every output's cosine is at
        least :data:`AUTO_MIN_COSINE`, else ``'fp32'``; and the reason.
    """
    native = [flag for flag in INT8_FLAGS if flag in set(flags)]
    if not native:
        return "fp32", (f"fp32: this CPU has no native int8 dot product ({', '.join(INT8_FLAGS)}): onnxruntime's "
                        "int8 kernels saturate there, so int8 features move further from fp32, for less speed")
    if not cosine:
        return "fp32", "fp32: the int8 model's cosine to fp32 was not measured"
    name, worst = min(cosine.items(), key=lambda item: (item[1], item[0]))
    if worst < AUTO_MIN_COSINE:
        return "fp32", (f"fp32: int8's mean cosine to fp32 at {name} is {worst:.4f}, below {AUTO_MIN_COSINE} "
                        f"(this CPU has {native[0]}, so int8 would be faster)")
    return "int8", (f"int8: this CPU has {native[0]} and int8's mean cosine to fp32 is at least {worst:.4f} "
                    f"(>= {AUTO_MIN_COSINE}) on every output")


class Int8KernelWarning(UserWarning):
    """An int8 model runs on a CPU without the native int8 dot product of the CPU that quantised it."""


def int8_kernel_warning(quantized_on: Iterable[str], here: Iterable[str], model: str = "the int8 model") -> str | None:
    """The warning for running an int8 model quantised on a VNNI/AMX CPU on one without them, or None.

    Without native int8 dot products onnxruntime multiplies uint8 by int8 with 16-bit
    intermediate sums that saturate, so the features move further from fp32 than the cosine the
    export measured (on the quantising CPU) says: MobileNetV2's mean cosine fell from 0.986 to
    0.976 with VNNI hidden (``benchmarks/quant.py``'s instruction-set table).

    Parameters
    ----------
    quantized_on : iterable of str
        The quantising CPU's flags (the spec's ``quantization.cpu_flags``; empty when unknown,
        which never warns).
    here : iterable of str
        This CPU's flags (:func:`isa_flags`; empty when unknown, which never warns).
    model : str
        How the message names the model.
    """
    had = [flag for flag in INT8_FLAGS if flag in set(quantized_on)]
    here = set(here)
    if not had or not here or any(flag in here for flag in INT8_FLAGS):
        return None
    return (f"{model} was quantised on a CPU with {had[0]}; this CPU has no native int8 dot product "
            f"({', '.join(INT8_FLAGS)}), so its int8 features differ more from fp32 than the export's cosine says, "
            "and from those extracted on the quantising CPU; on this machine use the fp32 export "
            "(`export --precision auto` here keeps fp32)")


def mixed_int8_kernels_warning(runs: Iterable[Mapping[str, object]], here: Iterable[str], store: str) -> str | None:
    """The warning for adding int8 rows to a store whose rows came from the other kind of int8 kernels, or None.

    Rows extracted with an int8 model on a CPU with native int8 dot products and rows extracted
    with it on a CPU without them differ more than the model's cosine to fp32 suggests (see
    :func:`int8_kernel_warning`), yet the store's fingerprint is the same for both.

    Parameters
    ----------
    runs : iterable of mapping
        The store's run records (the manifest's ``runs``); those without ``cpu_flags`` (older
        stores, other machines' unknown flags) make no claim.
    here : iterable of str
        This CPU's flags (:func:`isa_flags`; empty when unknown, which never warns).
    store : str
        How the message names the store.
    """
    here = set(here)
    if not here:
        return None
    native = any(flag in here for flag in INT8_FLAGS)
    for run in runs:
        flags = run.get("cpu_flags")
        if not isinstance(flags, (list, tuple)) or not flags:
            continue
        if any(flag in flags for flag in INT8_FLAGS) != native:
            kind = "without" if native else "with"
            source = " ".join(str(run.get("source", "an earlier source")).split())  # the store's text: one line
            source = source if len(source) <= 120 else source[:117] + "..."
            return (f"{store} holds int8 features extracted on a CPU {kind} native int8 dot products (its run of "
                    f"{source}), and this CPU {'has them' if native else 'has none'}: "
                    "onnxruntime's int8 kernels differ between the two, so the rows added now will not match those "
                    "already stored; extract into a new store, or on a CPU of the first kind")
    return None
