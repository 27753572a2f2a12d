"""What ``benchmarks.gpu`` reports: the ratios of one group, the GPU targets and the tables."""

from __future__ import annotations

from typing import Any

from ._common import ratio_cell, speed_ratio, table
from .targets import evaluate

__all__ = ["ORT_BOUND", "ORT_NHWC", "ORT_RUN", "TARGET_GROUP", "TORCH", "ratios", "tables", "targets"]

ORT_RUN, ORT_BOUND, TORCH, ORT_NHWC = "ort session.run", "ort io_binding", "torch eager", "ort io_binding prefer_nhwc"
#: The group of the speed target: ResNet-50, fp16, batch 256.
TARGET_GROUP = ("resnet50", "fp16", 256)


def ratios(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Speed ratios ``"fast / slow"`` of the variants that were measured."""
    pairs = [(ORT_BOUND, TORCH), (ORT_RUN, TORCH), (ORT_BOUND, ORT_RUN), (ORT_NHWC, TORCH), (ORT_NHWC, ORT_BOUND)]
    return {f"{fast} / {slow}": speed_ratio(stats, fast, slow) for fast, slow in pairs
            if fast in stats and slow in stats}


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The GPU targets, only from a CUDA run and only for what was measured."""
    if doc.get("device") != "cuda":
        return []
    out = []
    for precision in ("fp32", "fp16"):
        measured = [(a["backbone"], a[precision]) for a in doc["agreement"] if precision in a]
        if not measured:
            continue
        worst = min(measured, key=lambda item: item[1]["min_cosine"])
        per = ", ".join(f"{b} {r['min_cosine']:.6f}" for b, r in measured)
        missing = [a["backbone"] for a in doc["agreement"] if precision not in a]
        tf32 = [f"{a['backbone']} with TF32 off: {a['fp32 use_tf32=0']['min_cosine']:.6f}"
                for a in doc["agreement"] if precision == "fp32" and "fp32 use_tf32=0" in a]
        note = (f"lowest per-image cosine, CUDA {precision} vs CPU fp32, "
                f"{doc['parameters'].get('agreement_images')} images per "
                f"backbone: {per}." + (f" Not measured: {', '.join(missing)}." if missing else "")
                + (f" {'; '.join(tf32)}." if tf32 else ""))
        out.append(evaluate(f"gpu.agreement.{precision}", worst[1]["min_cosine"], note=note,
                            detail={"per_backbone": dict(measured)}))
    target = _find_group(doc, *TARGET_GROUP)
    key = f"{ORT_BOUND} / {TORCH}"
    if target is not None and key in target.get("ratios", {}):
        ratio, v = target["ratios"][key], target["variants"]
        extra = [f"session.run {v[ORT_RUN]['rate']:.0f} img/s" if ORT_RUN in v else ""]
        if f"{ORT_NHWC} / {TORCH}" in target["ratios"]:
            extra.append(f"with prefer_nhwc=1: {v[ORT_NHWC]['rate']:.0f} img/s = "
                         f"{target['ratios'][f'{ORT_NHWC} / {TORCH}']['value']:.2f}x torch")
        out.append(evaluate(
            "gpu.ort_vs_torch.resnet50", ratio["value"], paired_range=(ratio["paired_min"], ratio["paired_max"]),
            note=f"{doc['parameters'].get('gpu', {}).get('gpu', 'GPU')}: ORT IO binding {v[ORT_BOUND]['rate']:.0f} "
                 f"img/s, torch {v[TORCH]['rate']:.0f} img/s; " + "; ".join(filter(None, extra)) + ".",
            detail={"variants": {n: s["rate"] for n, s in v.items()}}))
    return out


def _find_group(doc: dict[str, Any], backbone: str, precision: str, bs: int) -> dict[str, Any] | None:
    key = (backbone, precision, bs)
    return next((g for g in doc["groups"]
                 if (g["backbone"], g["precision"], g["batch_size"]) == key and g["status"] == "measured"), None)


def _rate_cell(group: dict[str, Any], name: str) -> str:
    stats = group.get("variants", {}).get(name)
    if stats is not None:
        return f"{stats['rate']:,.0f} ±{50 * stats['spread']:.0f}%"
    if name in group.get("errors", {}):
        return "skipped" if group["errors"][name].startswith("skipped") else "error"
    return group["status"] if group["status"] != "measured" else "-"


def tables(doc: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    out = []
    groups = sorted(doc["groups"], key=lambda g: (g["backbone"], g["precision"], g["batch_size"]))
    if groups:
        rows = []
        for g in groups:
            r = g.get("ratios", {})
            cell = lambda key, r=r: ratio_cell(r[key]) if key in r else "-"  # noqa: E731
            rows.append([g["backbone"], g["precision"], g["batch_size"], _rate_cell(g, ORT_RUN),
                         _rate_cell(g, ORT_BOUND), _rate_cell(g, TORCH), cell(f"{ORT_BOUND} / {TORCH}"),
                         cell(f"{ORT_RUN} / {TORCH}"), cell(f"{ORT_NHWC} / {TORCH}")])
        where = doc["parameters"].get("gpu", {}).get("gpu") or doc["device"]
        out.append(table(f"Images/s on {where}: uint8 batches in host memory to pooled features in host memory, "
                         f"median of {repeats} repeats ±half-spread; ratios with the per-repeat range",
                         ["backbone", "precision", "batch", "ORT session.run", "ORT IO binding", "torch eager",
                          "IO binding / torch", "session.run / torch", "prefer_nhwc / torch"], rows))
    if doc["agreement"]:
        keys = ("fp32", "fp16", "torch fp32", "torch fp16")
        cell = lambda a, k: (f"{a[k]['min_cosine']:.6f} ({a[k]['mean_cosine']:.6f})" if k in a  # noqa: E731
                             else ("error" if k in a.get("errors", {}) else "-"))
        rows = [[a["backbone"], a.get("images", "-"), a.get("input", "-"), *(cell(a, k) for k in keys)]
                for a in doc["agreement"]]
        out.append(table(f"Agreement with CPU fp32 features (onnxruntime CPUExecutionProvider): lowest (mean) "
                         f"per-image cosine on {doc['device']}",
                         ["backbone", "images", "input", "ORT fp32", "ORT fp16", "torch fp32", "torch fp16"], rows))
    decode = doc.get("host_decode") or {}
    if "per_thread" in decode:
        fastest: dict[str, dict[str, Any]] = {}
        for g in groups:
            if ORT_BOUND in g.get("variants", {}) and (
                    g["backbone"] not in fastest
                    or g["variants"][ORT_BOUND]["rate"] > fastest[g["backbone"]]["variants"][ORT_BOUND]["rate"]):
                fastest[g["backbone"]] = g
        rows = [[g["backbone"], g["precision"], g["batch_size"], f"{g['variants'][ORT_BOUND]['rate']:,.0f}",
                 f"{decode['all_cores']:,.0f}", f"{g['variants'][ORT_BOUND]['rate'] / decode['per_thread']:.1f}"]
                for g in fastest.values()]
        if rows:
            out.append(table(f"Host decode vs the fastest ORT IO-binding rate per backbone: decode_image of 500x375 "
                             f"JPEGs, {decode['per_thread']:,.0f} img/s per thread, {decode['all_cores']:,.0f} img/s "
                             f"on {decode['threads']} threads",
                             ["backbone", "precision", "batch", "ORT IO binding img/s",
                              f"decode img/s ({decode['threads']} threads)", "threads needed to feed the GPU"],
                             rows))
    out.extend(_decode_tables(doc, repeats))
    return out


def _decode_tables(doc: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    out = []
    host, dev = doc.get("host_decode") or {}, doc.get("device_decode") or {}
    if "rate" in dev:
        diffs = dev["pixel_difference"]
        rows = [[f"host decode_image, {host['threads']} threads", f"{host['all_cores']:,.0f}", *("-" for _ in diffs)]
                ] if "all_cores" in host else []
        rows.append([f"device decode ({dev['device']}, {dev['batch']} per call)", f"{dev['rate']:,.0f}",
                     *(f"{d['mean_abs']:.2f} / {d['p99_abs']:.0f} / {d['max_abs']}" for d in diffs.values())])
        out.append(table(f"Decoding {dev['images']} 500x375 JPEGs to the model's input, img/s (median of {repeats}); "
                         "pixel difference from the host decode: mean / 99th percentile / max grey levels",
                         ["decoder", "img/s", *(f"vs {name}" for name in diffs)], rows))
    e2e = doc.get("extract_decode") or {}
    if "ratio" in e2e:
        rate = lambda name: (f"{e2e['variants'][name]['rate']:,.0f} "  # noqa: E731
                             f"±{50 * e2e['variants'][name]['spread']:.0f}%")
        sizes = " and ".join("x".join(map(str, size)) for size in e2e["sizes"])
        out.append(table(f"extract end to end ({e2e['model']}, {e2e['images']} JPEGs of {sizes}, batch "
                         f"{e2e['batch']}, {e2e['device']}), img/s, median of {repeats} ±half-spread",
                         ["decode=host", "decode=device", "device/host", "feature cosine min (mean)"],
                         [[rate("extract decode=host"), rate("extract decode=device"), ratio_cell(e2e["ratio"]),
                           f"{e2e['feature_cosine']['min']:.6f} ({e2e['feature_cosine']['mean']:.6f})"]]))
    return out
