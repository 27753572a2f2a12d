"""Registry of classifier heads: a decorator fills it, :func:`create_head` reads it.

A *head* is a plain scikit-learn estimator (usually a :class:`~sklearn.pipeline.Pipeline`
with its own scaling) trained on stored features. Builders are registered by name with
:func:`register_head`, as timm registers models; the built-in heads live in
:mod:`heads.builtin` and are registered the first time the registry is read.

A head whose builder uses an estimator class of its own names it in the same call, with its
ONNX converter: the class joins the head-file allowlist (:mod:`heads.persist`) and the converter
makes the head packageable (:mod:`heads.onnx`). One call, in the head's own module, makes a head
benchable, savable and packageable.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sklearn.base import BaseEstimator

from featurestore.utils import close_matches_hint

from ._method import method_used
from .errors import DuplicateHeadError, HeadParamError, UnknownHeadError
from .onnx_graph import Converter

__all__ = [
    "register_head",
    "head_converters",
    "trusted_head_types",
    "create_head",
    "list_heads",
    "head_description",
    "head_params",
    "param_grid",
    "method_used",
    "TASK_TYPES",
]

Builder = Callable[..., BaseEstimator]
"""A function ``builder(**params) -> estimator`` with explicit keyword parameters."""

Grid = Mapping[str, Sequence[Any]]
"""A :class:`~sklearn.model_selection.GridSearchCV` ``param_grid`` (one dict)."""

GridSpec = Grid | Callable[..., Grid]
"""A fixed grid, or a function of the builder's parameters returning one."""

_B = TypeVar("_B", bound=Builder)

_BUILTIN_MODULES = ("heads.builtin", "heads.mlp", "heads.siamese", "heads.regression", "heads.multilabel")

#: The task types a head is registered for; ``classification`` unless ``register_head`` says otherwise.
TASK_TYPES = ("classification", "regression", "multilabel")


@dataclass(frozen=True)
class _Entry:
    name: str
    builder: Builder
    description: str
    grid: GridSpec
    params: tuple[str, ...]
    estimator: type | None
    converter: Converter | None
    task_type: str = "classification"


#: Per task type, the heads by name (names may repeat across types: ``tree`` classifies and regresses).
_REGISTRIES: dict[str, dict[str, _Entry]] = {task_type: {} for task_type in TASK_TYPES}
_REGISTRY = _REGISTRIES["classification"]
_builtins_loaded = False


def register_head(
    name: str, *, description: str, param_grid: GridSpec | None = None, estimator: type | None = None,
    converter: Converter | None = None, task_type: str = "classification",
) -> Callable[[_B], _B]:
    """Register a head builder under ``name``.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"svm"``. Must not be taken yet.
    description : str
        One line saying what the head is; shown by :func:`head_description`.
    param_grid : dict or callable, optional
        A small grid for ``--search`` (``GridSearchCV`` over the pipeline's step
        parameters, e.g. ``{"svc__C": [0.1, 1.0, 10.0]}``), or a function taking the
        builder's keyword parameters and returning one. Defaults to an empty grid.
    estimator : type, optional
        The estimator class of the head's own that its builder uses (defined at the top level
        of a module). It joins the allowlist of head files by its full name, so a fitted head
        saves and loads (:func:`heads.persist.load_head`); a class only, never a function.
    converter : callable, optional
        ``converter(fitted_estimator) -> steps``: how a fitted ``estimator`` converts to ONNX
        (see :mod:`heads.onnx_graph`), so ``featurestore package`` ships the head. Needs
        ``estimator``.
    task_type : {'classification', 'regression', 'multilabel'}, default='classification'
        What the head predicts. A name is unique within its type only: ``tree`` names a
        classifier and a regressor.

    Returns
    -------
    callable
        A decorator that records the builder and returns it unchanged.

    Raises
    ------
    DuplicateHeadError
        If ``name`` is already registered.
    HeadParamError
        If the builder takes ``*args``/``**kwargs`` or positional-only parameters:
        every option must be an explicit keyword so bad names can be reported. If
        ``estimator`` is not an estimator class at the top level of a module, if a converter
        comes without it, or if another head registered the class with another converter.

    Examples
    --------
    >>> from sklearn.naive_bayes import GaussianNB
    >>> @register_head("my-nb", description="Gaussian naive Bayes")  # doctest: +SKIP
    ... def my_nb(var_smoothing: float = 1e-9) -> GaussianNB:
    ...     return GaussianNB(var_smoothing=var_smoothing)

    A head on an estimator class of one's own names the class and its ONNX converter
    (``tests/heads/test_new_head.py`` defines this one in full):

    >>> @register_head("centroid", description="nearest class mean", estimator=CentroidHead,
    ...                converter=centroid_onnx)  # doctest: +SKIP
    ... def centroid(temperature: float = 0.1) -> CentroidHead:
    ...     return CentroidHead(temperature=temperature)
    """

    registry = _registry(task_type)

    def decorator(builder: _B) -> _B:
        if name in registry:
            raise DuplicateHeadError(
                f"head {name!r} is already registered (by {registry[name].builder.__module__}); "
                "choose another name"
            )
        _check_estimator(name, estimator, converter)
        registry[name] = _Entry(
            name=name,
            builder=builder,
            description=description,
            grid={} if param_grid is None else param_grid,
            params=_keyword_params(name, builder),
            estimator=estimator,
            converter=converter,
            task_type=task_type,
        )
        return builder

    return decorator


def _check_estimator(name: str, estimator: type | None, converter: Converter | None) -> None:
    if estimator is None:
        if converter is not None:
            raise HeadParamError(f"head {name!r}: a converter converts the head's estimator class; "
                                 "name it with register_head(..., estimator=...)")
        return
    if not isinstance(estimator, type) or not issubclass(estimator, BaseEstimator):
        raise HeadParamError(f"head {name!r}: estimator={estimator!r} is not a scikit-learn estimator class; "
                             "pass the class the builder uses (functions are never trusted in head files)")
    if estimator.__qualname__ != estimator.__name__ or estimator.__module__ in (None, "__main__"):
        raise HeadParamError(f"head {name!r}: estimator class {estimator.__qualname__} must be defined at the top "
                             "level of an importable module, so a saved head can name it")
    if converter is not None and not callable(converter):
        raise HeadParamError(f"head {name!r}: converter={converter!r} is not callable")
    for entry in _entries():
        if entry.estimator is estimator and entry.converter is not converter:
            raise DuplicateHeadError(f"head {name!r}: class {estimator.__name__} is already registered by head "
                                     f"{entry.name!r} with another converter; pass the same one")


def _keyword_params(name: str, builder: Builder) -> tuple[str, ...]:
    params = []
    for p in inspect.signature(builder).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise HeadParamError(
                f"builder of head {name!r} has parameter {p.name!r} of kind {p.kind.description}; "
                "builders take explicit keyword parameters only"
            )
        params.append(p.name)
    return tuple(params)


def _registry(task_type: str) -> dict[str, _Entry]:
    try:
        return _REGISTRIES[task_type]
    except (KeyError, TypeError):
        raise HeadParamError(f"task type {task_type!r} has no heads; valid: {', '.join(TASK_TYPES)}") from None


def _entries() -> list[_Entry]:
    return [entry for registry in _REGISTRIES.values() for entry in registry.values()]


def _entry(name: str, task_type: str = "classification") -> _Entry:
    _load_builtins()
    registry = _registry(task_type)
    try:
        return registry[name]
    except (KeyError, TypeError):
        pass
    kind = "" if task_type == "classification" else f"{task_type} "
    raise UnknownHeadError(f"unknown {kind}head {name!r}; {close_matches_hint(str(name), sorted(registry), limit=3, quote=True)}; "
                           f"available: {', '.join(sorted(registry))}")


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True  # set first: the modules call register_head on import
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)


def _check_params(entry: _Entry, params: Mapping[str, Any]) -> None:
    unknown = sorted(set(params) - set(entry.params))
    if unknown:
        valid = ", ".join(entry.params) or "(none)"
        raise HeadParamError(
            f"head {entry.name!r} takes no parameter {', '.join(map(repr, unknown))}; "
            f"valid: {valid}. Nested step parameters (e.g. from param_grid({entry.name!r})) "
            "go to create_head(...).set_params(...)"
        )


def create_head(name: str, task_type: str = "classification", **params: Any) -> BaseEstimator:
    """Build a fresh, unfitted head by name.

    Parameters
    ----------
    name : str
        A name from :func:`list_heads`.
    task_type : {'classification', 'regression', 'multilabel'}, default='classification'
        Which registry ``name`` is looked up in: ``create_head("tree", "regression")`` is a
        regression tree.
    **params
        Keyword parameters of the head's builder (see :func:`head_params`), e.g.
        ``create_head("svm", C=10.0)``. Step parameters of the returned pipeline are
        set afterwards with ``set_params`` (``head.set_params(svc__C=10.0)``).

    Returns
    -------
    sklearn.base.BaseEstimator
        An unfitted classifier (or regressor); ``clone``, ``get_params`` and ``set_params`` work.

    Raises
    ------
    UnknownHeadError
        If ``name`` is not registered; the message lists close names.
    HeadParamError
        If a parameter is not one the builder takes, or its value is rejected.

    Examples
    --------
    >>> head = create_head("logreg")
    >>> type(head).__name__
    'Pipeline'
    """
    entry = _entry(name, task_type)
    _check_params(entry, params)
    try:
        return entry.builder(**params)
    except HeadParamError:
        raise
    except (TypeError, ValueError) as exc:
        raise HeadParamError(f"head {name!r} rejected parameters {params!r}: {exc}") from exc


def list_heads(task_type: str = "classification") -> list[str]:
    """Names of the heads registered for a task type, sorted.

    Parameters
    ----------
    task_type : {'classification', 'regression', 'multilabel'}, default='classification'

    Returns
    -------
    list of str

    Raises
    ------
    HeadParamError
        If ``task_type`` is not one of :data:`TASK_TYPES`.

    Examples
    --------
    >>> "svm" in list_heads()
    True
    >>> "ridge" in list_heads("regression")
    True
    """
    _load_builtins()
    return sorted(_registry(task_type))


def head_description(name: str, task_type: str = "classification") -> str:
    """The one-line description a head was registered with.

    Parameters
    ----------
    name : str
        A name from :func:`list_heads`.
    task_type : str, default='classification'
        As for :func:`create_head`.

    Returns
    -------
    str

    Raises
    ------
    UnknownHeadError
        If ``name`` is not registered.
    """
    return _entry(name, task_type).description


def head_params(name: str, task_type: str = "classification") -> dict[str, Any]:
    """The builder's keyword parameters and their defaults.

    Parameters
    ----------
    name : str
        A name from :func:`list_heads`.
    task_type : str, default='classification'
        As for :func:`create_head`.

    Returns
    -------
    dict
        ``{parameter: default}`` in signature order.

    Raises
    ------
    UnknownHeadError
        If ``name`` is not registered.
    """
    entry = _entry(name, task_type)
    sig = inspect.signature(entry.builder)
    return {p: sig.parameters[p].default for p in entry.params}


def param_grid(name: str, task_type: str = "classification", **params: Any) -> dict[str, list[Any]]:
    """A small search grid over the step parameters of ``create_head(name, **params)``.

    Parameters
    ----------
    name : str
        A name from :func:`list_heads`.
    task_type : str, default='classification'
        As for :func:`create_head`.
    **params
        The builder parameters the head is created with; only grids that depend on
        them (the ensemble's, which names its members) read them.

    Returns
    -------
    dict of str to list
        Ready for ``GridSearchCV(create_head(name, **params), param_grid(name, **params))``.
        Empty when the head tunes itself (``logreg`` selects ``C`` by internal CV).

    Raises
    ------
    UnknownHeadError
        If ``name`` is not registered.
    HeadParamError
        If a parameter is not one the builder takes.

    Examples
    --------
    >>> param_grid("knn")
    {'knn__n_neighbors': [10, 20, 50]}
    """
    entry = _entry(name, task_type)
    _check_params(entry, params)
    grid = entry.grid(**params) if callable(entry.grid) else entry.grid
    return {key: list(copy.deepcopy(values)) for key, values in grid.items()}


def head_converters() -> dict[type, Converter]:
    """The ONNX converters registered with the heads, by estimator class.

    Returns
    -------
    dict
        ``{estimator class: converter}``, for :mod:`heads.onnx`.
    """
    _load_builtins()
    return {entry.estimator: entry.converter for entry in _entries()
            if entry.estimator is not None and entry.converter is not None}


def trusted_head_types() -> frozenset[str]:
    """Full names (``module.Class``) of the estimator classes registered with the heads.

    Returns
    -------
    frozenset of str
        Classes a head file may name besides :data:`heads.persist.TRUSTED_TYPES`.
    """
    _load_builtins()
    return frozenset(f"{entry.estimator.__module__}.{entry.estimator.__name__}"
                     for entry in _entries() if entry.estimator is not None)
