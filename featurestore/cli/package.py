"""``featurestore package``: one ONNX file from image to class (backbone, fusion, head).

The exported backbone (preprocessing inside) feeds the head's layers, concatenated, into the
fitted fusion and head, converted with skl2onnx and merged into one graph with
``onnx.compose``. The result runs with onnxruntime alone: input ``images`` (uint8
``(N, H, W, 3)``), outputs ``label`` (int64, an index into the class names) and
``probabilities`` (float32 ``(N, K)``; for linear SVMs, their decision scores). Metadata:
``featurestore.classes`` (the class names as JSON), ``featurestore.spec`` (the backbone's) and
``featurestore.head`` (the head's sidecar: store fingerprint, layers, fusion, params, scores).

Every registered head converts, alone or after ``ConcatFusion`` (any normalisation): through
skl2onnx (scalers, logistic regression, linear and RBF SVMs, trees, forests, naive Bayes),
onnxmltools (XGBoost) or, where neither has a converter, graphs built node by node
(:mod:`.package_graphs`: the Nystroem kernel map, the cosine k-NN vote, the L2 fusion, soft
voting and stacking). ``AttentionFusion`` is exported with torch's exporter. Any other step (hard voting, stacking over
members without ``predict_proba``) raises :class:`~featurestore.errors.PackageError` naming it, and
nothing is written.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from heads.persist import load_head

from .._atomic import write_bytes_atomic
from ..errors import PackageError
from ..spec import SPEC_KEY, read_spec
from . import package_graphs as graphs
from .predict import check_head_model, check_head_width

__all__ = ["CLASSES_KEY", "HEAD_KEY", "package_head"]

CLASSES_KEY = "featurestore.classes"
HEAD_KEY = "featurestore.head"
_FEATURES = "featurestore.features"
_ML_OPSET = 3


def _identity(step: Any) -> bool:
    from sklearn.preprocessing import FunctionTransformer

    return isinstance(step, FunctionTransformer) and step.func is None and step.inverse_func is None


def _fusion_as_scaler(fusion: Any) -> Any:
    """ConcatFusion's per-column affine map as the equivalent fitted StandardScaler."""
    from sklearn.preprocessing import StandardScaler

    from heads._blocks import block_slices

    if fusion.norm == "l2":
        raise PackageError("ConcatFusion(norm='l2') has no ONNX conversion yet (per-block L2 normalisation); "
                           "fit the head with norm='standardize' to package it")
    scale = np.array(fusion.scale_, dtype=np.float64, copy=True)
    for block, weight in zip(block_slices(fusion.blocks_), fusion.weights_):
        scale[block] /= weight
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = np.asarray(fusion.mean_, np.float64), scale, scale ** 2
    scaler.n_features_in_, scaler.n_samples_seen_ = len(scale), 1
    return scaler


def _xgboost_classifier(head: Any) -> Any:
    """The head's booster as an XGBClassifier (its classes 0..K-1), which onnxmltools converts.

    The converter is registered with skl2onnx on first use, as skl2onnx documents for XGBoost.
    """
    import xgboost
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

    update_registered_converter(xgboost.XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
                                convert_xgboost, options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
    classifier = xgboost.XGBClassifier()
    classifier.load_model(bytearray(head.booster_.save_raw("ubj")))
    classifier.head_classes_ = np.asarray(head.classes_)  # what the indices 0..K-1 stand for
    return classifier


def _float32_thresholds(trees: Any) -> Any:
    """A copy whose split thresholds are the largest float32 at or below each float64 one.

    scikit-learn compares float32 features with float64 thresholds; ONNX's tree ensembles hold
    float32 thresholds, and rounding one up would send a value between the two the other way.
    With the threshold rounded down, ``x <= t`` gives the same answer for every float32 ``x``.
    """
    trees = copy.deepcopy(trees)
    for tree in getattr(trees, "estimators_", [trees]):
        threshold = tree.tree_.threshold
        single = threshold.astype(np.float32)
        lower = np.where(single.astype(np.float64) > threshold, np.nextafter(single, np.float32(-np.inf)), single)
        threshold[:] = np.where(tree.tree_.feature < 0, threshold, lower.astype(np.float64))
    return trees


class _Built:
    """A step converted by one of :mod:`.package_graphs`' builders: ``build(width, opset) -> Piece``."""

    def __init__(self, build: Any) -> None:
        self.build = build


def _plain_steps(estimator: Any) -> list[Any]:
    """The fitted steps as scikit-learn estimators skl2onnx converts, or :class:`_Built` steps, identities dropped."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier, StackingClassifier, VotingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler
    from sklearn.svm import SVC, LinearSVC
    from sklearn.tree import DecisionTreeClassifier

    from heads._knn import CosineKNN
    from heads.attention import AttentionFusion
    from heads._logreg import SweptLogisticRegression
    from heads._svm import ScalableSVC
    from heads._xgb import XGBHead
    from heads.fusion import ConcatFusion

    if isinstance(estimator, Pipeline):
        return [plain for _, step in estimator.steps for plain in _plain_steps(step)]
    if _identity(estimator):
        return []
    if isinstance(estimator, FunctionTransformer) and getattr(estimator.func, "__name__", "") == "_as_float64":
        return []  # a cast to float64 for GaussianNB; the converter computes in float32 (tested within 1e-4)
    if isinstance(estimator, ConcatFusion):
        if estimator.norm in ("l2", "power"):
            return [_Built(lambda width, opset: graphs.concat_fusion_piece(estimator, width, opset))]
        return [_fusion_as_scaler(estimator)]
    if isinstance(estimator, AttentionFusion):
        return [_Built(lambda width, opset: graphs.attention_fusion_piece(estimator, width, opset))]
    if isinstance(estimator, SweptLogisticRegression):
        return [copy.deepcopy(estimator.estimator_)]
    if isinstance(estimator, ScalableSVC):
        return _plain_steps(estimator.estimator_)
    if type(estimator).__name__ == "Nystroem":
        return [_Built(lambda width, opset: graphs.nystroem_piece(estimator, width, opset))]
    if isinstance(estimator, CosineKNN):
        return [_Built(lambda width, opset: graphs.cosine_knn_piece(estimator, width, opset))]
    if isinstance(estimator, VotingClassifier):
        return [_Built(lambda width, opset: _voting_piece(estimator, width, opset))]
    if isinstance(estimator, StackingClassifier):
        return [_Built(lambda width, opset: _stacking_piece(estimator, width, opset))]
    if isinstance(estimator, (DecisionTreeClassifier, RandomForestClassifier)):
        return [_float32_thresholds(estimator)]
    if isinstance(estimator, XGBHead):
        return [_xgboost_classifier(estimator)]
    if isinstance(estimator, (StandardScaler, PCA, LogisticRegression, LinearSVC, SVC, GaussianNB)):
        return [estimator]
    raise PackageError(f"{type(estimator).__name__} has no ONNX conversion yet; packaged heads today: logreg, "
                       "linear-svm, svm, tree, forest, nb, xgb, knn, ensemble (alone or after a concat fusion)")


def _voting_piece(voting: Any, width: int, opset: int) -> Any:
    if voting.voting != "soft":
        raise PackageError("VotingClassifier(voting='hard') has no ONNX conversion yet; use voting='soft'")
    members = [_piece(member, width, opset) for member in voting.estimators_]
    return graphs.vote(members, voting.weights, np.asarray(voting.classes_), width, opset)


def _stacking_piece(stacking: Any, width: int, opset: int) -> Any:
    if stacking.passthrough or any(method != "predict_proba" for method in stacking.stack_method_):
        raise PackageError("StackingClassifier converts only with members stacked by predict_proba and no "
                           "passthrough; its members here: " + ", ".join(stacking.stack_method_))
    members = [_piece(member, width, opset) for member in stacking.estimators_]
    stacked = graphs.stacked_probabilities(members, len(stacking.classes_) == 2, width, opset)
    final = _piece(stacking.final_estimator_, stacked.out_width, opset)  # predicts indices into classes_
    _relabel(final.model, np.asarray(stacking.classes_), first_of_ties=False)
    return graphs.chain(stacked, final)


def _sklearn_piece(steps: list[Any], width: int, opset: int) -> Any:
    """A run of steps skl2onnx converts, as one piece (a classifier when the last one is)."""
    from sklearn.pipeline import make_pipeline
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    final = steps[-1]
    classifier = hasattr(final, "classes_")
    # classifiers output probabilities (or an SVM's decision scores) as a tensor, not a list of maps
    # (no ZipMap); LinearSVC gets an explicit option of its own, which keeps skl2onnx from offering
    # it the ZipMap option it does not take
    from sklearn.svm import LinearSVC

    options = ({id(final): {"nocl": False} if isinstance(final, LinearSVC) else {"zipmap": False}}
               if classifier else {})
    with warnings.catch_warnings():  # skl2onnx reads SVC's probA_/probB_, deprecated in scikit-learn 1.9
        warnings.filterwarnings("ignore", "Attribute `prob", FutureWarning)
        model = to_onnx(make_pipeline(*steps), initial_types=[("x", FloatTensorType([None, width]))],
                        target_opset={"": opset, "ai.onnx.ml": _ML_OPSET}, options=options)
    model.ir_version = graphs.IR_VERSION
    if not classifier:
        return graphs.Piece(model, int(model.graph.output[0].type.tensor_type.shape.dim[1].dim_value))
    model = _rename_outputs(model, ["label", "probabilities"])  # converters name them differently (SVC: output_label)
    if hasattr(final, "estimators_") or hasattr(final, "tree_"):
        _relabel(model, np.asarray(final.classes_), first_of_ties=True)
    classes = getattr(final, "head_classes_", None)
    if classes is not None and not np.array_equal(classes, np.arange(len(classes))):
        _relabel(model, classes, first_of_ties=False)
    return graphs.Piece(model, None)


def _rename_outputs(model: Any, names: list[str]) -> Any:
    """``model`` with its outputs called ``names``, in order: every name inside gets a prefix first
    (a converter may use ``label`` for an inner edge), then Identity nodes give the outputs their names."""
    from onnx import compose, helper

    model = compose.add_prefix(model, "sk.", rename_inputs=False)
    for output, name in zip(model.graph.output, names):
        model.graph.node.append(helper.make_node("Identity", [output.name], [name]))
        output.name = name
    return model


def _piece(estimator: Any, width: int, opset: int) -> Any:
    """The whole head (fusion and classifier) as one piece."""
    pieces, run = [], []
    for step in _plain_steps(estimator) + [None]:
        if step is not None and not isinstance(step, _Built):
            run.append(step)
            continue
        if run:
            pieces.append(_sklearn_piece(run, width, opset))
            run = []
            width = pieces[-1].out_width
        if step is not None:
            pieces.append(step.build(width, opset))
            width = pieces[-1].out_width
    if not pieces or pieces[-1].out_width is not None:
        raise PackageError(f"{type(estimator).__name__} does not end in a classifier")
    head = pieces[0]
    for piece in pieces[1:]:
        head = graphs.chain(head, piece)
    return head


def _head_graph(estimator: Any, width: int, opset: int) -> Any:
    return _piece(estimator, width, opset).model


def _relabel(graph: Any, classes: np.ndarray, *, first_of_ties: bool) -> None:
    """Replace the converted classifier's ``label`` with the head's own class labels.

    Without ``first_of_ties`` the converted label (an index 0..K-1) is mapped to ``classes``.
    With it, the label is the arg-max of the probabilities rounded to 1e-6, first index on
    ties, as scikit-learn's for a tree ensemble: a forest's probabilities are fractions of its
    trees (0.4 and 0.4 tie exactly in scikit-learn, which takes the first), and summed in float32
    one of them comes out a hair larger.
    """
    from onnx import helper, numpy_helper

    for node in graph.graph.node:
        node.output[:] = ["head.index" if name == "label" else name for name in node.output]
    graph.graph.initializer.append(numpy_helper.from_array(classes.astype(np.int64), "head.classes"))
    index = "head.index"
    if first_of_ties:
        index = "head.first_index"
        graph.graph.initializer.append(numpy_helper.from_array(np.array(1e6, np.float32), "head.million"))
        graph.graph.node.extend([
            helper.make_node("Mul", ["probabilities", "head.million"], ["head.scaled"]),
            helper.make_node("Round", ["head.scaled"], ["head.rounded"]),
            helper.make_node("ArgMax", ["head.rounded"], [index], axis=1, keepdims=0, select_last_index=0),
        ])
    graph.graph.node.append(helper.make_node("Gather", ["head.classes", index], ["label"], axis=0))


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
    if names != ["label", "probabilities"]:
        raise PackageError(f"the converted head's outputs are {names}, not label and probabilities")
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
    """
    import onnx

    if precision not in ("fp32", "fp16"):
        raise PackageError(f"precision {precision!r} is not supported; choose fp32 or fp16")
    model_path, head_path = Path(model_path), Path(head_path)
    spec = read_spec(model_path)
    estimator, metadata = load_head(head_path)
    check_head_model(model_path, [layer.output for layer in spec.layers], metadata, head_path)
    layers = list(metadata["layers"])
    check_head_width(estimator, [spec.layer(name).dim for name in layers], metadata, head_path, model_path)
    width = sum(spec.layer(name).dim for name in layers)
    head = _head_graph(estimator, width, spec.opset)
    metadata = {**metadata, "probabilities": hasattr(estimator, "predict_proba"),  # a Pipeline has it if its head has
                "backbone_precision": precision}
    backbone = onnx.load(str(model_path))
    merged = _merged(_half_precision(backbone) if precision == "fp16" else backbone, head, layers, width)
    del merged.metadata_props[:]
    for key, value in ((SPEC_KEY, spec.to_json()), (CLASSES_KEY, json.dumps(list(metadata["classes"]))),
                       (HEAD_KEY, json.dumps(metadata, sort_keys=True, default=str))):
        entry = merged.metadata_props.add()
        entry.key, entry.value = key, value
    merged.doc_string = f"featurestore classifier: {spec.backbone} -> {metadata.get('fusion')} -> {metadata['head']}"
    data = merged.SerializeToString(deterministic=True)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(Path(output), data)
    return {"classes": list(metadata["classes"]), "layers": layers, "head": metadata["head"], "bytes": len(data)}
