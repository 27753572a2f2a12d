"""The performance targets BENCHMARKS.md states, and how a measured ratio is judged against one.

A script reports a target with :func:`evaluate`; the report lists every target here, measured
or not, so a target whose benchmark has not run (or does not exist yet) shows as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["TARGETS", "Target", "evaluate", "get_target"]


@dataclass(frozen=True)
class Target:
    """A goal for one measured quantity.

    Parameters
    ----------
    id : str
        Stable key (``notes.toml`` sections use it).
    benchmark : str
        The script that measures it (``benchmarks/<benchmark>.py``).
    goal : str
        What is compared, in words.
    op : {'>=', '<='}
    threshold : float
    unit : {'x', '%', 'points', 'cosine', 's'}
        ``x``: a ratio; ``%``: extra cost in percent; ``points``: accuracy points; ``cosine``: the
        lowest cosine similarity between two sets of feature vectors; ``s``: seconds (a budget).
    """

    id: str
    benchmark: str
    goal: str
    op: str
    threshold: float
    unit: str

    def __post_init__(self) -> None:
        if self.op not in (">=", "<="):
            raise ValueError(f"target {self.id}: op must be '>=' or '<=', got {self.op!r}")

    def passes(self, measured: float) -> bool:
        """Whether ``measured`` meets the target (compared at 9 decimals: 100 * (0.805 - 0.795) is 1 point)."""
        value = round(measured, 9)
        return value >= self.threshold if self.op == ">=" else value <= self.threshold

    def describe(self) -> str:
        unit = {"x": "x", "%": " %", "points": " points", "cosine": " cosine", "s": " s"}[self.unit]
        return f"{self.op} {self.threshold:g}{unit}"


_MNV2_BS32 = "MobileNetV2, batch 32, JPEG folder -> store on disk"
TARGETS: tuple[Target, ...] = (
    Target("extract.vs_torch", "extract",
           f"end-to-end `extract` images/s vs torch eager inference only on pre-decoded tensors ({_MNV2_BS32})",
           ">=", 2.0, "x"),
    Target("extract.vs_torch.vit", "extract",
           "end-to-end `extract` images/s vs torch eager inference only on pre-decoded tensors "
           "(timm ViT-S/16, batch 32, JPEG folder -> store on disk)", ">=", 1.5, "x"),
    Target("extract.vs_ort", "extract",
           f"end-to-end `extract` images/s vs onnxruntime inference only on pre-decoded uint8 ({_MNV2_BS32})",
           ">=", 0.85, "x"),
    Target("extract.stages_overhead", "extract",
           "extra time of `stages` (5 pooled layers) over `last`, end to end (MobileNetV2, batch 32)",
           "<=", 3.0, "%"),
    Target("extract.stages_overhead_ort", "extract",
           "extra time of `stages` over `last`, onnxruntime inference only (MobileNetV2, batch 32)",
           "<=", 3.0, "%"),
    Target("store.write", "store",
           "`write_arrays` speed vs `np.save` + fsync of the same bytes, keeping row content keys and a shard "
           "checksum (50,000 x 1280 float32)", ">=", 0.5, "x"),
    Target("store.read", "store",
           "`open_store(path).load()` speed vs `np.load` of the same features + keys + labels, full read "
           "(50,000 x 1280 float32)", ">=", 0.9, "x"),
    Target("store.read_layer", "store",
           "`open_store(path).load(layer)` speed vs `np.load` of that layer + keys + labels, one layer of five "
           "(50,000 rows, MobileNetV2 stages, float32)", ">=", 0.9, "x"),
    Target("store.random_rows", "store",
           "time of `load(rows=...)` for 5,000 sorted random rows / a contiguous 5,000-row slice "
           "(50,000 x 1280 float32)", "<=", 2.0, "x"),
    Target("store.commit_growth", "store_scale",
           "mean commit time per shard (checkpoints included) at 100,000 shards / at 1,000 shards", "<=", 1.5, "x"),
    Target("heads.vs_reextract", "heads",
           "heads loop on stored features vs re-extracting the features for every head", ">=", 100.0, "x"),
    Target("heads.fit_budget", "head_fit",
           "slowest fit of a default `bench` head (logreg, svm, tree, nb, xgb) on 60,000 training rows x 1,280 "
           "features, one fit at a time on 2 cores (Fashion-MNIST, MobileNetV2 pre_logits, pretrained and untrained)",
           "<=", 300.0, "s"),
    Target("heads.fit_budget.regression", "head_fit_regression",
           "slowest fit of a regression head (ridge, svr, tree, forest, bayes, xgb, knn) on 60,000 training rows "
           "x 2,000 features, one fit at a time on 2 cores (synthetic: rectified projections of a 32-d latent, "
           "a nonlinear target of it)", "<=", 300.0, "s"),
    Target("heads.fit_budget.multilabel", "head_fit_multilabel",
           "slowest fit of a multilabel head (tree, forest native; logreg, nb, xgb, knn one-vs-rest) on 60,000 "
           "training rows x 2,000 features, 7 labels, one fit at a time on 2 cores (synthetic: rectified "
           "projections of a 32-d latent, labels from nonlinear functions of it)", "<=", 300.0, "s"),
    Target("map.budget", "map",
           "wall seconds of the whole `featurestore map` command (defaults: stratified sample, PCA, t-SNE, "
           "thumbnails, the page) on the 70,000-row Fashion-MNIST store (raw pixels), 2 cores", "<=", 180.0, "s"),
    Target("quant.speedup.mobilenet_v2", "quant",
           "int8 export (`export --precision int8`, static QDQ) vs fp32 export images/s, onnxruntime only, "
           "MobileNetV2, batch 32, 2 threads", ">=", 1.8, "x"),
    Target("quant.speedup.resnet50", "quant",
           "int8 export vs fp32 export images/s, onnxruntime only, ResNet-50 (random init), batch 32, 2 threads",
           ">=", 1.8, "x"),
    Target("extract.int8_vs_bf16.resnet50", "quant",
           "end-to-end `extract` with the int8 export (JPEG folder -> store) vs torch bf16 autocast channels_last "
           "inference only on pre-decoded tensors, ResNet-50, batch 32, 2 threads (a VNNI/AMX CPU)", ">=", 1.5, "x"),
    Target("extract.int8_vs_bf16.vit", "quant",
           "end-to-end `extract` with the int8 export vs torch bf16 autocast inference only on pre-decoded "
           "tensors, ViT-S/16 (timm, random init), batch 32, 2 threads (a VNNI/AMX CPU)", ">=", 1.0, "x"),
    Target("quant.transfer_loss.mobilenet_v2", "quant",
           "Fashion-MNIST test accuracy of int8 features within this of fp32 features' (|fp32 - int8|, the larger "
           "of logreg and RBF SVM), MobileNetV2 (ImageNet weights)", "<=", 0.5, "points"),
    Target("quant.transfer_loss.efficientnet_lite0", "quant",
           "Fashion-MNIST test accuracy of int8 features within this of fp32 features' (|fp32 - int8|, the larger "
           "of logreg and RBF SVM), EfficientNet-Lite0 (ImageNet weights)", "<=", 0.5, "points"),
    Target("gpu.ort_vs_torch.resnet50", "gpu",
           "onnxruntime CUDA fp16 with IO binding vs torch CUDA eager fp16 channels_last images/s, ResNet-50, "
           "batch 256, pre-decoded uint8 on the host", ">=", 0.8, "x"),
    Target("gpu.agreement.fp32", "gpu",
           "lowest per-image cosine similarity of CUDA fp32 features to CPU fp32 features (every backbone)",
           ">=", 0.9999, "cosine"),
    Target("gpu.agreement.fp16", "gpu",
           "lowest per-image cosine similarity of CUDA fp16 features to CPU fp32 features (every backbone)",
           ">=", 0.999, "cosine"),
)


def get_target(target_id: str) -> Target:
    """The target called ``target_id`` (KeyError listing the known ones otherwise)."""
    for target in TARGETS:
        if target.id == target_id:
            return target
    raise KeyError(f"unknown target {target_id!r}; known: {', '.join(t.id for t in TARGETS)}")


def evaluate(target_id: str, measured: float, *, paired_range: tuple[float, float] | None = None,
             note: str = "", detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """A target's entry for a results JSON: the measured value, PASS/MISS, a note.

    Parameters
    ----------
    target_id : str
    measured : float
        In the target's unit (a ratio, percent, or accuracy points).
    paired_range : (float, float), optional
        Lowest and highest per-repeat values, in the same unit.
    note : str
        For a miss: the measured cause and what was tried.
    detail : dict, optional
        Any figures the note refers to.
    """
    target = get_target(target_id)
    return {
        "id": target.id, "goal": target.goal, "op": target.op, "threshold": target.threshold, "unit": target.unit,
        "measured": float(measured), "paired_range": list(paired_range) if paired_range else None,
        "passed": bool(target.passes(measured)), "note": note, "detail": detail or {},
    }
