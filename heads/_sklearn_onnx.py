"""ONNX converters of the scikit-learn steps heads are made of: one table, :data:`ONNX_CONVERTERS`.

Most steps go to skl2onnx as they are (scalers, PCA, logistic regression, linear and RBF SVMs,
naive Bayes); trees and forests first get float32 thresholds; the Nystroem kernel map, soft
voting and stacking are built node by node. Pipelines and searches convert what they hold;
identity transformers and the naive Bayes head's cast to float64 (the converter computes in
float32, tested within 1e-4) drop out. Classes are matched exactly: a subclass declares its own.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.base import is_regressor
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor, StackingClassifier, VotingClassifier
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import BayesianRidge, LogisticRegression, RidgeCV
from sklearn.model_selection import GridSearchCV
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler
from sklearn.svm import SVC, SVR, LinearSVC, LinearSVR
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from featurestore.errors import PackageError

from .builtin import _as_float64
from .onnx_graph import (IR_VERSION, Context, Converter, Graph, GraphBuilder, Piece, Skl2onnx, chain, relabel,
                         stacked_probabilities, vote)

#: A multilabel head's label ``k`` is 1 where its probability, rounded to 1e-6, exceeds one half (a tie
#: goes to 0, as scikit-learn's arg-max over (0, 1) takes the first).
_MILLION = 1e6

__all__ = ["ONNX_CONVERTERS", "sklearn_piece"]

_ML_OPSET = 3


def _as_is(estimator: Any) -> list[Any]:
    return [Skl2onnx(estimator)]


def _function(transformer: FunctionTransformer) -> list[Any]:
    if transformer.func is None and transformer.inverse_func is None:
        return []  # the identity (the tree heads' check for finite values)
    if transformer.func is _as_float64:
        return []  # the naive Bayes head's cast; its converter computes in float32
    raise PackageError(f"FunctionTransformer({getattr(transformer.func, '__name__', transformer.func)}) has no ONNX "
                       "conversion; only the identity and the naive Bayes head's cast have one")


def _float32_thresholds(trees: Any) -> list[Any]:
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
    return [Skl2onnx(trees)]


def _nystroem_piece(nystroem: Nystroem, context: Context) -> Piece:
    """An RBF Nystroem map: ``rbf(x, components) @ normalization.T``."""
    from onnx import TensorProto

    if nystroem.kernel != "rbf" or nystroem.kernel_params:
        raise PackageError(f"Nystroem(kernel={nystroem.kernel!r}) has no ONNX conversion; only the RBF kernel does")
    width, opset = context.width, context.opset
    components = np.asarray(nystroem.components_, np.float64)
    gamma = float(nystroem.gamma if nystroem.gamma is not None else 1.0 / components.shape[1])
    m = components.shape[0]
    b = GraphBuilder("nystroem.")
    x_sq = b.row_sum(b.op("Mul", ["x", "x"]), width)                                        # (N, 1)
    cross = b.op("MatMul", ["x", b.const((-2.0 * components.T).astype(np.float32), "c2t")])  # (N, M)
    dist = b.op("Add", [b.op("Add", [cross, x_sq]),
                        b.const((components ** 2).sum(axis=1)[None, :].astype(np.float32), "csq")])
    dist = b.op("Max", [dist, b.const(np.zeros(1, np.float32), "zero")])
    kernel = b.op("Exp", [b.op("Mul", [dist, b.const(np.array([-gamma], np.float32), "gamma")])])
    y = b.op("MatMul", [kernel, b.const(np.asarray(nystroem.normalization_, np.float32).T.copy(), "norm")])
    return Piece(b.model(width, {"y": (TensorProto.FLOAT, ["N", m])}, {"y": y}, opset), m)


def _voting(voting: VotingClassifier) -> list[Any]:
    if voting.voting != "soft":
        raise PackageError("VotingClassifier(voting='hard') has no ONNX conversion yet; use voting='soft'")

    def build(context: Context) -> Piece:
        members = [context.convert(member, context.width) for member in voting.estimators_]
        return vote(members, voting.weights, np.asarray(voting.classes_), context.width, context.opset)

    return [Graph(build)]


def _stacking(stacking: StackingClassifier) -> list[Any]:
    if stacking.passthrough or any(method != "predict_proba" for method in stacking.stack_method_):
        raise PackageError("StackingClassifier converts only with members stacked by predict_proba and no "
                           "passthrough; its members here: " + ", ".join(stacking.stack_method_))

    def build(context: Context) -> Piece:
        members = [context.convert(member, context.width) for member in stacking.estimators_]
        stacked = stacked_probabilities(members, len(stacking.classes_) == 2, context.width, context.opset)
        final = context.convert(stacking.final_estimator_, stacked.out_width)  # predicts indices into classes_
        relabel(final.model, np.asarray(stacking.classes_), first_of_ties=False)
        return chain(stacked, final)

    return [Graph(build)]


def _multilabel_outputs(model: Any, probabilities: str) -> Any:
    """``model`` with outputs ``label`` (int64 ``(N, L)``, :data:`_MILLION`'s rule) and ``probabilities``
    (float32 ``(N, L)``), from its node output ``probabilities`` (``(N, L)``)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(np.array(_MILLION, np.float32), "ml.million"),
                              numpy_helper.from_array(np.array(_MILLION / 2, np.float32), "ml.half")])
    graph.node.extend([
        helper.make_node("Mul", [probabilities, "ml.million"], ["ml.scaled"]),
        helper.make_node("Round", ["ml.scaled"], ["ml.rounded"]),
        helper.make_node("Greater", ["ml.rounded", "ml.half"], ["ml.on"]),
        helper.make_node("Cast", ["ml.on"], ["label"], to=TensorProto.INT64),
        helper.make_node("Identity", [probabilities], ["probabilities"]),
    ])
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("label", TensorProto.INT64, ["N", None]),
                         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", None])])
    return model


def _one_vs_rest(ovr: OneVsRestClassifier) -> list[Any]:
    """A multilabel one-vs-rest head: each member's probability of its label, side by side."""
    if getattr(ovr.label_binarizer_, "y_type_", None) != "multilabel-indicator":
        raise PackageError("OneVsRestClassifier converts as a multilabel head only (heads.multilabel)")
    constant = [k for k, member in enumerate(ovr.estimators_) if not hasattr(member, "classes_")]
    if constant:
        raise PackageError(f"labels {constant} of this one-vs-rest head had one value on every training row; "
                           "it has no ONNX conversion: refit on rows where every label is present and absent")

    def build(context: Context) -> Piece:
        members = [context.convert(member, context.width) for member in ovr.estimators_]
        stacked = stacked_probabilities(members, True, context.width, context.opset)
        return Piece(_multilabel_outputs(stacked.model, stacked.model.graph.output[0].name), None)

    return [Graph(build)]


#: The converter of each scikit-learn class heads are made of, matched by exact class.
ONNX_CONVERTERS: dict[type, Converter] = {
    Pipeline: lambda pipeline: [step for _, step in pipeline.steps],
    GridSearchCV: lambda search: [search.best_estimator_],
    FunctionTransformer: _function,
    StandardScaler: _as_is,
    PCA: _as_is,
    Nystroem: lambda nystroem: [Graph(lambda context: _nystroem_piece(nystroem, context))],
    LogisticRegression: _as_is,
    LinearSVC: _as_is,
    SVC: _as_is,
    GaussianNB: _as_is,
    DecisionTreeClassifier: _float32_thresholds,
    RandomForestClassifier: _float32_thresholds,
    VotingClassifier: _voting,
    StackingClassifier: _stacking,
    # the regression heads' steps (heads.regression)
    Normalizer: _as_is,
    RidgeCV: _as_is,
    BayesianRidge: _as_is,
    SVR: _as_is,
    LinearSVR: _as_is,
    KNeighborsRegressor: _as_is,
    DecisionTreeRegressor: _float32_thresholds,
    RandomForestRegressor: _float32_thresholds,
    OneVsRestClassifier: _one_vs_rest,  # the multilabel heads (heads.multilabel)
}


def sklearn_piece(steps: list[Any], width: int, opset: int) -> Piece:
    """A run of steps skl2onnx converts, as one piece (a classifier or a regressor when the last one is)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.pipeline import make_pipeline

    final = steps[-1]
    classifier = hasattr(final, "classes_")
    # classifiers output probabilities (or an SVM's decision scores) as a tensor, not a list of maps
    # (no ZipMap); LinearSVC gets an explicit option of its own, which keeps skl2onnx from offering
    # it the ZipMap option it does not take
    options = ({id(final): {"nocl": False} if isinstance(final, LinearSVC) else {"zipmap": False}}
               if classifier else {})
    with warnings.catch_warnings():  # skl2onnx reads SVC's probA_/probB_, deprecated in scikit-learn 1.9
        warnings.filterwarnings("ignore", "Attribute `prob", FutureWarning)
        model = to_onnx(make_pipeline(*steps), initial_types=[("x", FloatTensorType([None, width]))],
                        target_opset={"": opset, "ai.onnx.ml": _ML_OPSET}, options=options)
    model.ir_version = IR_VERSION
    if is_regressor(final):  # one output, (N, 1): the head's prediction
        return Piece(_rename_outputs(model, ["prediction"]), None)
    if not classifier:
        return Piece(model, int(model.graph.output[0].type.tensor_type.shape.dim[1].dim_value))
    if isinstance(final.classes_, list):  # a native multi-output (multilabel) tree or forest
        return Piece(_native_multilabel(model, final), None)
    model = _rename_outputs(model, ["label", "probabilities"])  # converters name them differently (SVC: output_label)
    if hasattr(final, "estimators_") or hasattr(final, "tree_"):
        relabel(model, np.asarray(final.classes_), first_of_ties=True)
    classes = getattr(final, "head_classes_", None)
    if classes is not None and not np.array_equal(classes, np.arange(len(classes))):
        relabel(model, classes, first_of_ties=False)
    return Piece(model, None)


def _native_multilabel(model: Any, final: Any) -> Any:
    """A multi-output tree's ``(L, N, 2)`` probabilities as ``(N, L)`` (each label's column 1), with its labels."""
    from onnx import helper, numpy_helper

    if any(len(classes) != 2 for classes in final.classes_):
        raise PackageError("a multilabel tree with a label that had one value on every training row has no ONNX "
                           "conversion: refit on rows where every label is present and absent")
    model = _rename_outputs(model, ["sk_label", "sk_probabilities"])
    n_labels = len(final.classes_)
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(np.array(v, np.int64), name) for v, name in
                              (([1], "ml.one"), ([2], "ml.two"), ([2], "ml.axis"), ([-1, n_labels], "ml.shape"))])
    graph.node.extend([
        helper.make_node("Transpose", ["sk_probabilities"], ["ml.nl2"], perm=[1, 0, 2]),
        helper.make_node("Slice", ["ml.nl2", "ml.one", "ml.two", "ml.axis"], ["ml.nl1"]),
        helper.make_node("Reshape", ["ml.nl1", "ml.shape"], ["ml.p"]),
    ])
    return _multilabel_outputs(model, "ml.p")


def _rename_outputs(model: Any, names: list[str]) -> Any:
    """``model`` with its outputs called ``names``, in order: every name inside gets a prefix first
    (a converter may use ``label`` for an inner edge), then Identity nodes give the outputs their names."""
    from onnx import compose, helper

    model = compose.add_prefix(model, "sk.", rename_inputs=False)
    for output, name in zip(model.graph.output, names):
        model.graph.node.append(helper.make_node("Identity", [output.name], [name]))
        output.name = name
    return model
