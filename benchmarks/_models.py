"""Exported backbones for the benchmarks (cached by content), their torch twins, and FLOP counts."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BACKBONES", "BackboneCase", "count_flops", "exported_model", "torch_twin"]

_REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BackboneCase:
    """A backbone the benchmarks run.

    Parameters
    ----------
    name : str
        Registered backbone name.
    random_init : bool
        Export seeded random weights (fine for speed; accuracy figures then say so).
    nominal_gflop : float
        Published FLOPs per 224x224 image (2 x MACs), next to the count from the graph.
    image_share : float
        Fraction of the ``--images`` a script feeds this backbone (slow ones get fewer).
    """

    name: str
    random_init: bool
    nominal_gflop: float
    image_share: float = 1.0


BACKBONES: dict[str, BackboneCase] = {
    "mobilenet_v2": BackboneCase("mobilenet_v2", random_init=False, nominal_gflop=0.60),
    "resnet50": BackboneCase("resnet50", random_init=True, nominal_gflop=8.17, image_share=0.25),
    # A plain vision transformer (random weights: no package ships ViT weights), 4.6 GMACs.
    "timm:vit_small_patch16_224": BackboneCase("timm:vit_small_patch16_224", random_init=True, nominal_gflop=9.2,
                                               image_share=0.25),
}


def _export_fingerprint(**arguments: Any) -> str:
    """Hash of what an export depends on: arguments, library versions and the exporter's source."""
    import onnx
    import torch

    digest = hashlib.sha256(json.dumps(arguments, sort_keys=True).encode())
    digest.update(f"torch={torch.__version__};onnx={onnx.__version__}".encode())
    for path in sorted([*(_REPO / "export").glob("*.py"), _REPO / "featurestore" / "spec.py"]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def exported_model(case: BackboneCase, layers: str, cache_dir: Path) -> Path:
    """The ONNX export of ``case`` with ``layers``, from ``cache_dir`` or exported now.

    The file name carries a hash of the export arguments, the torch/onnx versions and the
    source of ``export/``, so a changed exporter never serves a stale file; the file is
    written atomically by :func:`export.export_backbone`.
    """
    from export import export_backbone
    from featurestore import read_spec

    key = _export_fingerprint(backbone=case.name, layers=layers, random_init=case.random_init)
    path = cache_dir / f"{case.name.replace(':', '-')}-{layers}-{key}.onnx"
    if path.is_file():
        read_spec(path)  # a damaged file fails here rather than mid-benchmark
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    export_backbone(case.name, path, layers=layers, random_init=case.random_init)
    return path


def torch_twin(case: BackboneCase):
    """The torch module with the same weights as the export, classifier removed, in eval mode.

    What a user without featurestore runs: ``model(x)`` on normalised float NCHW tensors.
    """
    from torch import nn

    from export import build_backbone

    module, _ = build_backbone(case.name, random_init=case.random_init)
    linears = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if linears:  # the ImageNet classifier; the export's `last` layer is its input
        parent_name, _, child = linears[-1].rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, nn.Identity())
    return module.eval()


def _shape_of(value_info) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def count_flops(path: str | os.PathLike[str]) -> float:
    """FLOPs per image (2 x multiply-adds) of the Conv, MatMul and Gemm nodes of an ONNX graph.

    Shapes come from ONNX shape inference; the dynamic batch axis counts as 1.
    """
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    shapes = {vi.name: _shape_of(vi) for vi in [*graph.value_info, *graph.input, *graph.output]}
    shapes.update({init.name: list(init.dims) for init in graph.initializer})
    total = 0.0
    for node in graph.node:
        if node.op_type == "Conv":
            out, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
            if out is None or weight is None:
                raise ValueError(f"no inferred shape for Conv {node.name} in {path}")
            total += 2.0 * float(np.prod([d or 1 for d in out[1:]])) * float(np.prod(weight[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            if a is None or b is None:
                raise ValueError(f"no inferred shape for {node.op_type} {node.name} in {path}")
            trans_b = any(att.name == "transB" and att.i for att in node.attribute)
            k, n = (b[-1], b[-2]) if trans_b else (b[-2], b[-1])
            total += 2.0 * float(np.prod([d or 1 for d in a[:-1]])) * (k or 1) * (n or 1)
    return total
