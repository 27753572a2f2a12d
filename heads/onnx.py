"""Convert a fitted head (its fusion and classifier) to one ONNX graph, through a converter per class.

The converter of a class is declared where the class is defined, as skops' modules declare
their ``GET_STATE_DISPATCH_FUNCTIONS``: the scikit-learn steps in one table
(:data:`heads._sklearn_onnx.ONNX_CONVERTERS`), the fusions in theirs (:mod:`heads.fusion`,
:mod:`heads.attention`), and each head's own estimator with ``register_head(...,
estimator=..., converter=...)`` (:mod:`heads.builtin`, or a module of one's own). A head is
packageable where it is registered; nothing here names a head.

The graph's one input is ``x`` (float32 ``(N, width)``, the head's layers side by side); its
outputs are ``label`` (int64, the head's class labels) and ``probabilities`` (float32
``(N, K)``; for linear SVMs, their decision scores), or for a regression head one output,
``prediction`` (float32 ``(N, 1)``). See :mod:`heads.onnx_graph` for what a
converter returns.
"""

from __future__ import annotations

from typing import Any

from featurestore.errors import PackageError

from . import _sklearn_onnx
from .attention import ONNX_CONVERTERS as _ATTENTION
from .fusion import ONNX_CONVERTERS as _FUSION
from .onnx_graph import Context, Converter, Graph, Piece, Skl2onnx, chain
from .registry import head_converters, list_heads

__all__ = ["converter_for", "head_to_onnx", "head_piece"]

#: The converter tables of the modules that define steps but register no head.
_TABLES: tuple[dict[type, Converter], ...] = (_sklearn_onnx.ONNX_CONVERTERS, _FUSION, _ATTENTION)


def converter_for(cls: type) -> Converter | None:
    """The converter declared for exactly ``cls``, or None.

    Parameters
    ----------
    cls : type
        An estimator class.

    Returns
    -------
    callable or None
        ``converter(fitted) -> steps`` (see :mod:`heads.onnx_graph`).
    """
    for table in (*_TABLES, head_converters()):
        if cls in table:
            return table[cls]
    return None


def _steps(estimator: Any) -> list[Skl2onnx | Graph]:
    """The estimator as skl2onnx and graph steps, every other step converted in turn."""
    converter = converter_for(type(estimator))
    if converter is None:
        raise PackageError(f"{type(estimator).__name__} has no ONNX conversion yet (a head's estimator declares one "
                           f"with register_head(..., converter=...)); packaged heads today: {', '.join(list_heads())} "
                           "(alone or after a fusion)")
    steps: list[Skl2onnx | Graph] = []
    for step in converter(estimator):
        steps += [step] if isinstance(step, (Skl2onnx, Graph)) else _steps(step)
    return steps


def head_piece(estimator: Any, width: int, opset: int) -> Piece:
    """The whole head (fusion and classifier) as one classifier :class:`~heads.onnx_graph.Piece`.

    Parameters
    ----------
    estimator : estimator
        A fitted head, e.g. from :func:`heads.load_head`.
    width : int
        Columns of its input.
    opset : int
        Default-domain opset.

    Returns
    -------
    Piece

    Raises
    ------
    PackageError
        A step has no converter, or one setting of a step does not convert (named).
    """
    pieces: list[Piece] = []
    run: list[Any] = []
    for step in _steps(estimator) + [None]:
        if isinstance(step, Skl2onnx):
            run.append(step.estimator)
            continue
        if run:
            pieces.append(_sklearn_onnx.sklearn_piece(run, width, opset))
            run = []
            width = pieces[-1].out_width
        if step is not None:
            pieces.append(step.build(Context(width, opset, lambda member, w: head_piece(member, w, opset))))
            width = pieces[-1].out_width
    if not pieces or pieces[-1].out_width is not None:
        raise PackageError(f"{type(estimator).__name__} does not end in a classifier or a regressor")
    head = pieces[0]
    for piece in pieces[1:]:
        head = chain(head, piece)
    return head


def head_to_onnx(estimator: Any, width: int, opset: int = 17) -> Any:
    """A fitted head as an ONNX model: input ``x`` (float32 ``(N, width)``), outputs ``label`` and ``probabilities``
    (a classifier) or ``prediction`` (a regressor, float32 ``(N, 1)``).

    Parameters
    ----------
    estimator : estimator
        A fitted head (a pipeline, an ensemble, a fusion followed by a head, a grid search).
    width : int
        Columns of its input (the head's layers side by side).
    opset : int, default=17
        Default-domain opset (the backbone's, when the two are merged).

    Returns
    -------
    onnx.ModelProto

    Raises
    ------
    PackageError
        A step has no converter, or one setting of a step does not convert (named).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from heads import create_head
    >>> X, y = load_iris(return_X_y=True)
    >>> model = head_to_onnx(create_head("logreg").fit(X, y), width=4)
    >>> [output.name for output in model.graph.output]
    ['label', 'probabilities']
    """
    model = head_piece(estimator, width, opset).model
    inner = model.graph.input[0].name  # chained pieces prefix their names
    for node in model.graph.node:
        node.input[:] = ["x" if name == inner else name for name in node.input]
    model.graph.input[0].name = "x"
    return model
