"""ONNX graphs, built node by node, for the head steps skl2onnx has no converter for.

Each builder returns a :class:`Piece`: a model whose one input is ``x`` (float32 ``(N, width)``)
and whose outputs are ``y`` (a transform, ``(N, out_width)``) or ``label`` and ``probabilities``
(a classifier). :func:`chain` joins pieces one after another; :func:`vote` runs classifier
pieces side by side on the same input and averages their probabilities. Only default-domain
operators of opset 13 and later are used, and no reduction with an ``axes`` attribute or input
(whose form changed between opsets): sums over a row are products with a column of ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import PackageError

__all__ = ["Piece", "chain", "vote", "stacked_probabilities", "nystroem_piece", "cosine_knn_piece",
           "concat_fusion_piece", "attention_fusion_piece"]

IR_VERSION = 8


@dataclass
class Piece:
    """One step of a head as ONNX: ``model`` maps ``x`` to ``y`` (``out_width`` wide) or to a class."""

    model: Any
    out_width: int | None  # None: a classifier (outputs label, probabilities)


class _Builder:
    """Nodes and constants of one piece, with unique names."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes, self.initializers, self.count = prefix, [], [], 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}{hint}{self.count}"

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, n_out: int = 1, **attrs: Any) -> Any:
        from onnx import helper

        outputs = [self.name(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, **attrs))
        return outputs[0] if n_out == 1 else outputs

    def row_sum(self, x: str, width: int) -> str:
        """``(N, width) -> (N, 1)`` sums, as a product with a column of ones."""
        return self.op("MatMul", [x, self.const(np.ones((width, 1), np.float32), "ones")])

    def unit_rows(self, x: str, width: int) -> str:
        """Each row divided by its Euclidean norm; a zero row stays zero (as numpy code dividing by 1 there)."""
        norm = self.op("Sqrt", [self.row_sum(self.op("Mul", [x, x]), width)])
        zero = self.op("Equal", [norm, self.const(np.zeros(1, np.float32), "zero")])
        return self.op("Div", [x, self.op("Where", [zero, self.const(np.ones(1, np.float32), "one"), norm])])

    def model(self, width: int, outputs: dict[str, tuple[int, list[Any]]], final: dict[str, str], opset: int) -> Any:
        from onnx import TensorProto, helper

        for name, source in final.items():
            self.nodes.append(helper.make_node("Identity", [source], [name]))
        graph = helper.make_graph(
            self.nodes, "piece", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
            [helper.make_tensor_value_info(name, dtype, shape) for name, (dtype, shape) in outputs.items()],
            initializer=self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


def _classifier_outputs(b: _Builder, probabilities: str, classes: np.ndarray, width: int, opset: int) -> Any:
    """Outputs ``probabilities`` and ``label`` = ``classes[argmax]`` (first index on ties, as numpy)."""
    from onnx import TensorProto

    index = b.op("ArgMax", [probabilities], axis=1, keepdims=0, select_last_index=0)
    label = b.op("Gather", [b.const(np.asarray(classes).astype(np.int64), "classes"), index], axis=0)
    k = len(classes)
    return b.model(width, {"label": (TensorProto.INT64, ["N"]), "probabilities": (TensorProto.FLOAT, ["N", k])},
                   {"label": label, "probabilities": probabilities}, opset)


def nystroem_piece(nystroem: Any, width: int, opset: int) -> Piece:
    """:class:`sklearn.kernel_approximation.Nystroem` with an RBF kernel: ``rbf(x, components) @ normalization.T``."""
    from onnx import TensorProto

    if nystroem.kernel != "rbf" or nystroem.kernel_params:
        raise PackageError(f"Nystroem(kernel={nystroem.kernel!r}) has no ONNX conversion; only the RBF kernel does")
    components = np.asarray(nystroem.components_, np.float64)
    gamma = float(nystroem.gamma if nystroem.gamma is not None else 1.0 / components.shape[1])
    m = components.shape[0]
    b = _Builder("nystroem.")
    x_sq = b.row_sum(b.op("Mul", ["x", "x"]), width)                                        # (N, 1)
    cross = b.op("MatMul", ["x", b.const((-2.0 * components.T).astype(np.float32), "c2t")])  # (N, M)
    dist = b.op("Add", [b.op("Add", [cross, x_sq]),
                        b.const((components ** 2).sum(axis=1)[None, :].astype(np.float32), "csq")])
    dist = b.op("Max", [dist, b.const(np.zeros(1, np.float32), "zero")])
    kernel = b.op("Exp", [b.op("Mul", [dist, b.const(np.array([-gamma], np.float32), "gamma")])])
    y = b.op("MatMul", [kernel, b.const(np.asarray(nystroem.normalization_, np.float32).T.copy(), "norm")])
    return Piece(b.model(width, {"y": (TensorProto.FLOAT, ["N", m])}, {"y": y}, opset), m)


def concat_fusion_piece(fusion: Any, width: int, opset: int) -> Piece:
    """:class:`heads.fusion.ConcatFusion`: standardise, or take signed square roots and/or L2-normalise
    each block (a zero block stays zero); then weight each block."""
    from onnx import TensorProto

    from heads._blocks import block_slices

    b = _Builder("fusion.")
    x = "x"
    if fusion.norm == "power":  # signed square root, then as "l2"
        x = b.op("Mul", [b.op("Sign", [x]), b.op("Sqrt", [b.op("Abs", [x])])])
    if fusion.norm == "standardize":
        x = b.op("Div", [b.op("Sub", [x, b.const(np.asarray(fusion.mean_, np.float32), "mean")]),
                         b.const(np.asarray(fusion.scale_, np.float32), "scale")])
    parts = []
    for block, weight in zip(block_slices(fusion.blocks_), fusion.weights_):
        part = b.op("Slice", [x, b.const(np.array([block.start], np.int64), "start"),
                              b.const(np.array([block.stop], np.int64), "stop"),
                              b.const(np.array([1], np.int64), "axis")])
        if fusion.norm in ("l2", "power"):
            part = b.unit_rows(part, block.stop - block.start)
        if weight != 1.0:
            part = b.op("Mul", [part, b.const(np.array([weight], np.float32), "weight")])
        parts.append(part)
    y = b.op("Concat", parts, axis=1) if len(parts) > 1 else parts[0]
    return Piece(b.model(width, {"y": (TensorProto.FLOAT, ["N", width])}, {"y": y}, opset), width)


def cosine_knn_piece(knn: Any, width: int, opset: int) -> Piece:
    """:class:`heads._knn.CosineKNN`: cosine similarity to every training row, top k, weighted vote.

    The training rows are stored (unit-normalised, float32) in the graph, so its size grows
    with the training set (4 bytes per value).
    """
    b = _Builder("knn.")
    train = np.asarray(knn._unit_train, np.float32)
    k, n_classes = int(knn.n_neighbors_), len(knn.classes_)
    unit = b.unit_rows("x", width)
    similarity = b.op("MatMul", [unit, b.const(train.T.copy(), "train")])                  # (N, M)
    cos, nearest = b.op("TopK", [similarity, b.const(np.array([k], np.int64), "k")], n_out=2, axis=1,
                        largest=1, sorted=1)
    distance = b.op("Clip", [b.op("Sub", [b.const(np.ones(1, np.float32), "one"), cos]),
                             b.const(np.array(0.0, np.float32), "lo"), b.const(np.array(2.0, np.float32), "hi")])
    if knn.weights == "temperature":
        logits = b.op("Div", [b.op("Sub", [b.const(np.ones(1, np.float32), "one"), distance]),
                              b.const(np.array([knn.temperature], np.float32), "t")])
        first = b.op("Slice", [logits, b.const(np.array([0], np.int64), "s"), b.const(np.array([1], np.int64), "e"),
                               b.const(np.array([1], np.int64), "a")])  # sorted: the largest logit
        weights = b.op("Exp", [b.op("Sub", [logits, first])])
    elif knn.weights == "uniform":
        weights = b.op("Mul", [distance, b.const(np.zeros(1, np.float32), "zero")])
        weights = b.op("Add", [weights, b.const(np.ones(1, np.float32), "one")])
    else:  # "distance": 1/d, or only the exact matches where there are any
        exact = b.op("Cast", [b.op("Equal", [distance, b.const(np.zeros(1, np.float32), "zero")])], to=1)
        any_exact = b.op("Greater", [b.row_sum(exact, k), b.const(np.zeros(1, np.float32), "zero")])
        weights = b.op("Where", [any_exact, exact, b.op("Reciprocal", [distance])])
    votes = b.op("Gather", [b.const(np.asarray(knn._y_encoded, np.int64), "labels"), nearest], axis=0)  # (N, k)
    one_hot = b.op("OneHot", [votes, b.const(np.array(n_classes, np.int64), "depth"),
                              b.const(np.array([0.0, 1.0], np.float32), "values")], axis=-1)   # (N, k, C)
    tally = b.op("MatMul", [b.op("Unsqueeze", [weights, b.const(np.array([1], np.int64), "ax")]), one_hot])
    tally = b.op("Reshape", [tally, b.const(np.array([-1, n_classes], np.int64), "shape")])    # (N, C)
    probabilities = b.op("Div", [tally, b.row_sum(tally, n_classes)])
    return Piece(_classifier_outputs(b, probabilities, knn.classes_, width, opset), None)


def chain(first: Piece, second: Piece) -> Piece:
    """``second`` applied to the output of ``first`` (a transform)."""
    from onnx import compose

    if first.out_width is None:
        raise PackageError("a classifier can only be the last step of a head")
    a = compose.add_prefix(first.model, f"s{next(_PREFIXES)}.")
    b = compose.add_prefix(second.model, f"s{next(_PREFIXES)}.", rename_outputs=second.out_width is not None)
    for model in (a, b):
        model.ir_version = IR_VERSION
    merged = compose.merge_models(a, b, io_map=[(a.graph.output[0].name, b.graph.input[0].name)])
    return Piece(merged, second.out_width)


_PREFIXES = iter(range(10**9))


def _side_by_side(members: list[Piece], prefix: str) -> tuple[_Builder, list[Any]]:
    """A builder running every member on its input ``x``; returns it and the members' prefixed models."""
    from onnx import compose, helper

    b = _Builder(prefix)
    models = []
    for i, member in enumerate(members):
        model = compose.add_prefix(member.model, f"{prefix}member{i}.")
        models.append(model)
        b.nodes.append(helper.make_node("Identity", ["x"], [model.graph.input[0].name]))
        b.nodes.extend(model.graph.node)
        b.initializers.extend(model.graph.initializer)
    return b, models


def _with_domains(model: Any, models: list[Any]) -> Any:
    from onnx import helper

    domains = {(o.domain, o.version) for g in models for o in g.opset_import if o.domain}
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in sorted(domains))
    return model


def stacked_probabilities(members: list[Piece], drop_first: bool, width: int, opset: int) -> Piece:
    """The members' probabilities side by side (column 0 of each dropped for two classes, as
    :class:`~sklearn.ensemble.StackingClassifier` does): the input of its final estimator."""
    from onnx import TensorProto

    b, models = _side_by_side(members, "stack.")
    parts = [f"stack.member{i}.probabilities" for i in range(len(members))]
    if drop_first:
        parts = [b.op("Slice", [p, b.const(np.array([1], np.int64), "s"), b.const(np.array([2], np.int64), "e"),
                                b.const(np.array([1], np.int64), "a")]) for p in parts]
    y = b.op("Concat", parts, axis=1)
    out_width = sum(int(m.model.graph.output[1].type.tensor_type.shape.dim[1].dim_value) for m in members)
    out_width = len(members) if drop_first else out_width
    return Piece(_with_domains(b.model(width, {"y": (TensorProto.FLOAT, ["N", out_width])}, {"y": y}, opset),
                               models), out_width)


def vote(members: list[Piece], weights: list[float] | None, classes: np.ndarray, width: int, opset: int) -> Piece:
    """Soft voting: the weighted mean of the members' probabilities, label = ``classes[argmax]``."""
    weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
    b, models = _side_by_side(members, "vote.")
    total = None
    for i in range(len(members)):
        share = b.op("Mul", [f"vote.member{i}.probabilities",
                             b.const(np.array([weights[i] / sum(weights)], np.float32), "w")])
        total = share if total is None else b.op("Add", [total, share])
    return Piece(_with_domains(_classifier_outputs(b, total, classes, width, opset), models), None)


def attention_fusion_piece(fusion: Any, width: int, opset: int) -> Piece:
    """:class:`heads.attention.AttentionFusion`, exported by the fusion itself (torch's TorchScript exporter)."""
    import onnx

    model = onnx.load_from_string(fusion.to_onnx(opset))
    model.ir_version = IR_VERSION
    return Piece(model, int(fusion.dim))
