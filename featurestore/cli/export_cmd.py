"""``featurestore export BACKBONE -o model.onnx``: write a multi-layer ONNX with its spec."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._config import add_arguments, from_arguments
from ..export_config import ExportConfig
from ..spec import ModelSpec

#: Below this mean cosine to fp32, on any output, ``export`` warns that int8's features differ from fp32's.
LOW_COSINE = 0.99


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name,
        help="export a PyTorch backbone to ONNX with pooled layer outputs",
        description=(
            "Export a backbone (any torchvision classification model by name, NAME:ENUM for other torchvision "
            "weights, timm:NAME for timm's models, efficientnet_lite0/1/2, or `pixels`) to an ONNX file whose "
            "named outputs are the chosen layers, pooled inside the graph. The graph takes uint8 NHWC "
            "images and embeds its preprocessing and layer spec in its metadata. Named backbones are "
            "pretrained: weights come from the library's cache (torch.hub's $TORCH_HOME/hub/checkpoints), "
            "downloaded into it unless --offline."
        ),
    )
    p.add_argument("backbone", help="backbone name (see `featurestore layers --list`) or `pixels`")
    p.add_argument("-o", "--output", required=True, type=Path, help="ONNX file to write")
    add_arguments(p, ExportConfig, exclusive=[("weights", "random_init")])
    return p


def run(args: argparse.Namespace) -> int:
    from export import export_backbone

    spec, data = export_backbone(args.backbone, args.output, **from_arguments(ExportConfig, args).as_keywords(),
                                 explain=lambda reason: print(f"precision auto: {reason}"))
    prep = spec.preprocessing
    h, w, c = spec.input_shape
    print(f"wrote {args.output} ({len(data) / 1e6:.1f} MB): {spec.backbone}, weights {spec.weights.source}"
          + (" (RANDOM INIT)" if spec.weights.random_init else ""))
    print(f"input  {spec.input_name}: uint8 (batch, {h}, {w}, {c}); resize {prep.resize_mode} "
          f"{prep.resize_size or ''} -> crop {prep.crop_size}, {prep.interpolation}, mean {prep.mean}, std {prep.std}")
    for layer in spec.layers:
        stride = layer.stride if layer.stride is not None else "-"
        print(f"output {layer.output}: float32 (batch, {layer.dim})  channels {layer.channels}, stride {stride}, "
              f"layout {layer.layout}, pooling {layer.pooling}")
    q = spec.quantization
    if q is not None:
        how = (f"static QDQ, {q.method} calibration on {q.calibration_count} images" if q.mode == "static"
               else "dynamic (activations quantised at run time)")
        kept = f"; kept in float: {', '.join(q.float_nodes)}" if q.float_nodes else ""
        print(f"int8: {how}; quantised ops {', '.join(q.op_types)}{kept}; calibration sha256 "
              f"{q.calibration_sha256[:16]}...")
        for name, value in q.cosine.items():
            print(f"cosine to fp32 {name}: {value:.4f} (mean over {q.held_back} held-back images)")
    warning = low_cosine_warning(spec)
    if warning is not None:
        print(warning, file=sys.stderr)
    return 0


def low_cosine_warning(spec: ModelSpec) -> str | None:
    """One line warning that an int8 model's features differ from fp32's, or None.

    Parameters
    ----------
    spec : ModelSpec
        An exported model's spec.

    Returns
    -------
    str or None
        The warning when ``spec`` is int8 and its least mean cosine to fp32 over the outputs is
        below :data:`LOW_COSINE`; None otherwise (fp32, fp16, or no cosine measured).
    """
    q = spec.quantization
    if spec.precision != "int8" or q is None or not q.cosine:
        return None
    name, worst = min(q.cosine.items(), key=lambda item: item[1])
    if worst >= LOW_COSINE:
        return None
    return (f"featurestore export: WARNING: int8 features differ from fp32: mean cosine to fp32 at {name} is "
            f"{worst:.4f}, below {LOW_COSINE}; stores extracted with this model will not match fp32 ones "
            f"(--precision auto would keep fp32 here)")

