"""The vocabulary of ONNX converters: what a converter returns, and tools to build graphs node by node.

A *converter* turns one fitted estimator into a list of steps (see :mod:`heads.onnx`, which
runs them). Each step is one of:

- another fitted estimator, converted in turn by its own class's converter (a pipeline
  returns its steps; a wrapper returns what it wraps);
- :class:`Skl2onnx` around an estimator that skl2onnx converts as it is (consecutive ones
  are converted together, as one scikit-learn pipeline);
- :class:`Graph` around a function that builds the step's graph, given a :class:`Context`,
  as a :class:`Piece`.

A :class:`Piece` is a model whose one input is ``x`` (float32 ``(N, width)``) and whose
outputs are ``y`` (a transform, ``(N, out_width)``) or ``label`` and ``probabilities`` (a
classifier). :class:`GraphBuilder` names nodes and constants uniquely; :func:`chain` joins
pieces one after another; :func:`vote` and :func:`stacked_probabilities` run classifier pieces
side by side on the same input. Only default-domain operators of opset 13 and later are
used, and no reduction with an ``axes`` attribute or input (whose form changed between
opsets): sums over a row are products with a column of ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featurestore.errors import PackageError

__all__ = ["IR_VERSION", "Context", "Converter", "Graph", "GraphBuilder", "Piece", "Skl2onnx", "chain",
           "classifier_outputs", "relabel", "stacked_probabilities", "vote"]

IR_VERSION = 8


@dataclass
class Piece:
    """One step of a head as ONNX: ``model`` maps ``x`` to ``y`` (``out_width`` wide) or to a class."""

    model: Any
    out_width: int | None  # None: a classifier (outputs label, probabilities)


@dataclass(frozen=True)
class Context:
    """What a :class:`Graph` step is built for.

    Attributes
    ----------
    width : int
        Columns of the step's input ``x``.
    opset : int
        The default-domain opset of the packaged file.
    convert : callable
        ``convert(estimator, width) -> Piece``: another fitted estimator (an ensemble's member)
        converted whole, through its class's converter.
    """

    width: int
    opset: int
    convert: Callable[[Any, int], Piece]


@dataclass(frozen=True)
class Skl2onnx:
    """A fitted estimator skl2onnx converts as it is (its classifier's outputs get our names)."""

    estimator: Any


@dataclass(frozen=True)
class Graph:
    """A step whose graph ``build(context) -> Piece`` makes, node by node or with another exporter."""

    build: Callable[[Context], Piece]


Converter = Callable[[Any], Sequence[Any]]
"""``converter(fitted_estimator) -> steps``: estimators, :class:`Skl2onnx` or :class:`Graph` steps.
A converter raises :class:`~featurestore.errors.PackageError` for a setting it cannot convert."""


class GraphBuilder:
    """Nodes and constants of one piece, with unique names starting with ``prefix``."""

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
        """The model of input ``x`` (``(N, width)``) and ``outputs`` (name: (element type, shape)),
        each output an Identity of the node output ``final[name]``."""
        from onnx import TensorProto, helper

        for name, source in final.items():
            self.nodes.append(helper.make_node("Identity", [source], [name]))
        graph = helper.make_graph(
            self.nodes, "piece", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
            [helper.make_tensor_value_info(name, dtype, shape) for name, (dtype, shape) in outputs.items()],
            initializer=self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


def classifier_outputs(b: GraphBuilder, probabilities: str, classes: np.ndarray, width: int, opset: int) -> Any:
    """The model of ``b`` with outputs ``probabilities`` and ``label`` = ``classes[argmax]`` (first index on
    ties, as numpy)."""
    from onnx import TensorProto

    index = b.op("ArgMax", [probabilities], axis=1, keepdims=0, select_last_index=0)
    label = b.op("Gather", [b.const(np.asarray(classes).astype(np.int64), "classes"), index], axis=0)
    k = len(classes)
    return b.model(width, {"label": (TensorProto.INT64, ["N"]), "probabilities": (TensorProto.FLOAT, ["N", k])},
                   {"label": label, "probabilities": probabilities}, opset)


def relabel(graph: Any, classes: np.ndarray, *, first_of_ties: bool) -> None:
    """Replace a converted classifier's ``label`` with the head's own class labels.

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


def _side_by_side(members: list[Piece], prefix: str) -> tuple[GraphBuilder, list[Any]]:
    """A builder running every member on its input ``x``; returns it and the members' prefixed models."""
    from onnx import compose, helper

    b = GraphBuilder(prefix)
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
    return Piece(_with_domains(classifier_outputs(b, total, classes, width, opset), models), None)
