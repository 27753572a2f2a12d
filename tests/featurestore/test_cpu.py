"""The CPU's ISA flags, and the rule of ``--precision auto`` (issue 31, point 3), on any machine."""

from __future__ import annotations

from featurestore.cpu import (AUTO_MIN_COSINE, INT8_FLAGS, choose_precision, cpuinfo_flags, int8_kernel_warning,
                              isa_flags, mixed_int8_kernels_warning)

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_bf16 avx512_vnni avx_vnni xsave
processor\t: 1
flags\t\t: fpu
"""
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimddp i8mm sve\n"
AVX2 = "flags\t\t: fpu sse4_2 avx avx2 fma f16c\n"


def test_isa_flags_from_cpuinfo_text():
    assert isa_flags(X86) == ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                              "avx512_vnni", "avx_vnni", "avx512_bf16")  # the first processor's line, in order
    assert isa_flags(ARM) == ("asimd", "asimddp", "i8mm", "sve")
    assert isa_flags("") == () and isa_flags("no flags here") == ()
    assert {"fpu", "xsave", "avx512_vnni"} <= cpuinfo_flags(X86) and "asimd" not in cpuinfo_flags(X86)  # every flag
    assert cpuinfo_flags(ARM) == {"fp", "asimd", "evtstrm", "aes", "asimddp", "i8mm", "sve"}


def test_isa_flags_of_this_machine_are_a_tuple_of_known_names():
    flags = isa_flags()
    assert isinstance(flags, tuple) and all(isinstance(flag, str) for flag in flags)


def test_int8_on_vnni_or_amx_with_a_high_cosine():
    for flag in INT8_FLAGS:
        precision, reason = choose_precision(["avx2", flag], {"a": 0.9995, "b": 1.0})
        assert precision == "int8" and flag in reason and "0.9995" in reason and "\n" not in reason


def test_fp32_without_vnni_whatever_the_cosine():
    precision, reason = choose_precision(isa_flags(AVX2), {"a": 1.0})
    assert precision == "fp32" and "no native int8" in reason and "avx512_vnni" in reason
    assert choose_precision((), {"a": 1.0})[0] == "fp32"  # flags unknown (not Linux)


def test_fp32_when_the_cosine_is_low_or_unmeasured():
    precision, reason = choose_precision(isa_flags(X86), {"pre_logits": 0.9917, "stage": 0.9999})
    assert precision == "fp32" and "pre_logits" in reason and "0.9917" in reason and str(AUTO_MIN_COSINE) in reason
    assert choose_precision(["amx_int8"], {"a": AUTO_MIN_COSINE})[0] == "int8"  # the bound itself is enough
    assert choose_precision(["amx_int8"], {})[0] == "fp32" and choose_precision(["amx_int8"], None)[0] == "fp32"


def test_int8_kernel_warning_only_from_native_int8_to_none():
    """An int8 model quantised where VNNI/AMX ran it warns on a CPU without them, and in no other case."""
    vnni, avx2 = isa_flags(X86), isa_flags(AVX2)
    message = int8_kernel_warning(vnni, avx2, model="m.onnx")
    assert message.startswith("m.onnx was quantised on a CPU with avx512_vnni; this CPU has no native int8")
    assert "\n" not in message and "fp32" in message
    assert int8_kernel_warning(vnni, vnni) is None
    assert int8_kernel_warning(["amx_int8"], ["avx2", "avx_vnni"]) is None  # another native int8 dot product
    assert int8_kernel_warning(avx2, vnni) is None  # the export's cosine came from the saturating kernels
    assert int8_kernel_warning(avx2, avx2) is None  # ... and these are the kernels it measured
    assert int8_kernel_warning((), avx2) is None and int8_kernel_warning(vnni, ()) is None  # unknown: no claim


def test_mixed_int8_kernels_warning_names_the_run_of_the_other_kind():
    vnni, avx2 = list(isa_flags(X86)), list(isa_flags(AVX2))
    runs = [{"source": "old", "decoded": 3}, {"source": "photos", "cpu_flags": vnni, "decoded": 5}]
    message = mixed_int8_kernels_warning(runs, avx2, store="s")
    assert message.startswith("s holds int8 features extracted on a CPU with native int8 dot products (its run of "
                              "photos), and this CPU has none") and "\n" not in message
    reverse = mixed_int8_kernels_warning([{"source": "a", "cpu_flags": avx2}], vnni, store="s")
    assert "extracted on a CPU without native int8" in reverse and "this CPU has them" in reverse
    assert mixed_int8_kernels_warning(runs, vnni, store="s") is None  # the same kind
    assert mixed_int8_kernels_warning([{"source": "old"}], avx2, store="s") is None  # flags unknown: no claim
    assert mixed_int8_kernels_warning(runs, (), store="s") is None
    # a store's run records are data from elsewhere: any type, any text, one line out
    crafted = [{"source": "x", "cpu_flags": "avx512_vnni"}, {"source": "x", "cpu_flags": [1, None]},
               {"source": "a\nWARNING: b\r" * 500, "cpu_flags": vnni}]
    message = mixed_int8_kernels_warning(crafted, avx2, store="s")
    assert "\n" not in message and "\r" not in message and len(message) < 600 and "(its run of a WARNING: b a" in message
    assert mixed_int8_kernels_warning(crafted[:2], avx2, store="s") is None
