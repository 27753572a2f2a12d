"""One ONNX file from image to class: the exported backbone, the head's fusion and the head, merged.

The exported backbone (preprocessing inside) feeds the head's layers, concatenated, into the
fitted head converted by :mod:`heads.onnx`, merged into one graph with
``onnx.compose``. The result runs with onnxruntime alone: input ``images`` (uint8
``(N, H, W, 3)``), outputs ``label`` (int64, an index into the class names) and
``probabilities`` (float32 ``(N, K)``; for linear SVMs, their decision scores); a regression head's
file has one output instead, ``prediction`` (float32 ``(N, 1)``). Metadata:
:data:`CLASSES_KEY` (the class names as JSON), ``featurestore.spec`` (the backbone's) and
:data:`HEAD_KEY` (the head's sidecar: store fingerprint, layers, fusion, params, scores).

Every registered head converts, alone or after a fusion. A step without a converter (hard
voting, stacking over members without ``predict_proba``, a class registered without one) raises
:class:`~featurestore.errors.PackageError` naming it, and nothing is written.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from featurestore.utils import write_bytes_atomic
from featurestore.errors import PackageError
from featurestore.spec import PRECISIONS, SPEC_KEY, read_spec

from .checks import check_head_model, check_head_width
from .onnx import head_piece
from .persist import load_head

__all__ = ["CLASSES_KEY", "HEAD_KEY", "PRECISIONS", "package_head"]

#: Metadata key of the packaged file's class names (a JSON list; ``label`` indexes it).
CLASSES_KEY = "featurestore.classes"
#: Metadata key of the packaged head's sidecar (JSON), with ``probabilities`` and ``backbone_precision``.
HEAD_KEY = "featurestore.head"
#: What the backbone may compute in; the fusion and head stay float32.
_FEATURES = "featurestore.features"


def _merged(backbone: Any, head: Any, layers: list[str], width: int) -> Any:
    import onnx
    from onnx import TensorProto, compose, helper

    graph = backbone.graph
    graph.node.append(helper.make_node("Concat", layers, [_FEATURES], axis=1) if len(layers) > 1
                      else helper.make_node("Identity", layers, [_FEATURES]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(_FEATURES, TensorProto.FLOAT, ["batch", width]))
    head = compose.add_prefix(head, "head.", rename_outputs=False)
    head.ir_version = backbone.ir_version
    merged = compose.merge_models(backbone, head, io_map=[(_FEATURES, head.graph.input[0].name)])
    names = [output.name for output in merged.graph.output]
    if names not in (["label", "probabilities"], ["prediction"]):
        raise PackageError(f"the converted head's outputs are {names}, not label and probabilities (or prediction)")
    onnx.checker.check_model(merged, full_check=True)
    return merged


def _half_precision(backbone: Any) -> Any:
    """The backbone computing in float16 (onnxconverter-common's converter), its input and outputs unchanged.

    The preprocessing's Casts stay as they are (the converter would retype their outputs but not
    their ``to``), and every layer output is cast back to float32 for the head.
    """
    from onnx import TensorProto, helper
    from onnxconverter_common.float16 import convert_float_to_float16

    casts = [node.name for node in backbone.graph.node if node.op_type == "Cast"]
    with warnings.catch_warnings():  # it warns for every weight below float16's smallest normal
        warnings.simplefilter("ignore", UserWarning)
        half = convert_float_to_float16(backbone, keep_io_types=True, node_block_list=casts)
    for output in half.graph.output:
        if output.type.tensor_type.elem_type == TensorProto.FLOAT16:
            inner = f"{output.name}.float16"
            for node in half.graph.node:
                node.output[:] = [inner if name == output.name else name for name in node.output]
                node.input[:] = [inner if name == output.name else name for name in node.input]
            half.graph.node.append(helper.make_node("Cast", [inner], [output.name], to=TensorProto.FLOAT))
            output.type.tensor_type.elem_type = TensorProto.FLOAT
    return half


def package_head(model_path: str | Path, head_path: str | Path, output: str | Path, *,
                 precision: str = "fp32") -> dict[str, Any]:
    """Write one ONNX file that classifies images: the backbone, the head's fusion and the head.

    Parameters
    ----------
    model_path : str or Path
        The ONNX file the head's store was extracted with.
    head_path : str or Path
        A head from ``featurestore fit`` (``.skops``; checked against its sidecar).
    output : str or Path
        The classifier's ONNX file (written atomically, only once everything converted).
    precision : {'fp32', 'fp16'}, default='fp32'
        ``fp16`` computes the backbone in half precision (half the weights' size; faster on GPUs,
        slower on CPUs without float16 arithmetic); the fusion and head stay float32.

    Returns
    -------
    dict
        ``classes``, ``layers``, ``head`` and the file's ``bytes``.

    Raises
    ------
    PackageError
        A step cannot be converted (named); nothing is written.
    HeadModelMismatchError
        The head was fitted on features of another model.

    Examples
    --------
    >>> package_head("mobilenet.onnx", "logreg.skops", "classifier.onnx")  # doctest: +SKIP
    {'classes': ['cat', 'dog'], 'layers': ['pre_logits'], 'head': 'logreg', 'bytes': 9123456}
    """
    import onnx

    if precision not in PRECISIONS or precision == "int8":
        raise PackageError(f"precision {precision!r} is not supported by package; choose fp32 or fp16")
    model_path, head_path = Path(model_path), Path(head_path)
    spec = read_spec(model_path)
    estimator, metadata = load_head(head_path)
    check_head_model(model_path, [layer.output for layer in spec.layers], metadata, head_path)
    layers = list(metadata["layers"])
    check_head_width(estimator, [spec.layer(name).dim for name in layers], metadata, head_path, model_path)
    width = sum(spec.layer(name).dim for name in layers)
    head = head_piece(estimator, width, spec.opset).model
    metadata = {**metadata, "probabilities": hasattr(estimator, "predict_proba"),  # a Pipeline has it if its head has
                "backbone_precision": precision}
    backbone = onnx.load(str(model_path))
    merged = _merged(_half_precision(backbone) if precision == "fp16" else backbone, head, layers, width)
    del merged.metadata_props[:]
    classes = list(metadata.get("classes") or [])  # none for a regression head
    for key, value in ((SPEC_KEY, spec.to_json()), (CLASSES_KEY, json.dumps(classes)),
                       (HEAD_KEY, json.dumps(metadata, sort_keys=True, default=str))):
        entry = merged.metadata_props.add()
        entry.key, entry.value = key, value
    merged.doc_string = f"featurestore classifier: {spec.backbone} -> {metadata.get('fusion')} -> {metadata['head']}"
    data = merged.SerializeToString(deterministic=True)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(Path(output), data)
    return {"classes": classes, "layers": layers, "head": metadata["head"], "bytes": len(data)}
