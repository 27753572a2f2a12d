"""Save and load fitted heads safely: skops files with an explicit type allowlist, plus a JSON sidecar.

Pickles are never loaded: a ``.pkl``/``.joblib`` file, or any file that is not a skops
archive, is refused before it is opened for unpickling. A head file may name only the
classes in :data:`TRUSTED_TYPES` (the ones this package's heads are made of, each by its
full name) or registered with a head (``register_head(..., estimator=...)``, see
:func:`heads.registry.trusted_head_types`), and the functions in :data:`TRUSTED_FUNCTIONS`
(this package's own); every other type or function, from numpy, scipy, scikit-learn or
anywhere, is refused with :class:`UnsafeHeadError` before anything in the file is built.
XGBoost boosters travel inside the skops file in XGBoost's own UBJ format. The sidecar records
the head file's sha256, and a file whose bytes changed since it was saved is refused before its
content is parsed (a damaged booster can crash XGBoost itself).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.utils import file_sha256, write_bytes_atomic

from .errors import HeadFileNotFoundError, HeadModelFileError, HeadModelMismatchError, UnsafeHeadError
from .registry import trusted_head_types

__all__ = ["HEAD_SUFFIX", "TRUSTED_TYPES", "TRUSTED_FUNCTIONS", "UnsafeHeadError", "save_head", "load_head",
           "read_sidecar", "sidecar_path"]

HEAD_SUFFIX = ".skops"

#: Every class a head file may hold, by its full name: what the registered heads, fusions and
#: searches are made of when saved (``tests/heads/test_persist_safety.py`` saves each of them
#: and fails on a type missing here). Classes only: a function is a :data:`TRUSTED_FUNCTIONS` entry.
TRUSTED_TYPES = frozenset({
    # containers and values skops stores for any estimator
    "builtins.bytes", "builtins.dict", "builtins.list", "builtins.str", "builtins.tuple",
    "numpy.ndarray", "numpy.ma.MaskedArray",  # GridSearchCV's cv_results_ holds masked arrays
    "numpy.bool", "numpy.float16", "numpy.float32", "numpy.float64",
    "numpy.int8", "numpy.int16", "numpy.int32", "numpy.int64",
    "numpy.uint8", "numpy.uint16", "numpy.uint32", "numpy.uint64",
    # this package's estimators
    "heads._knn.CosineKNN", "heads._logreg.SweptLogisticRegression", "heads._svm.ScalableSVC",
    "heads._xgb.XGBHead", "heads.attention.AttentionFusion", "heads.fusion.ConcatFusion",
    # scikit-learn's, as the built-in heads use them
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._stacking.StackingClassifier",
    "sklearn.ensemble._voting.VotingClassifier",
    "sklearn.kernel_approximation.Nystroem",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.metrics._scorer._PassthroughScorer",
    "sklearn.model_selection._search.GridSearchCV",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.naive_bayes.GaussianNB",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.svm._classes.LinearSVC",
    "sklearn.svm._classes.SVC",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",
    # and as the regression heads use them (heads.regression)
    "sklearn.decomposition._pca.PCA",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.linear_model._bayes.BayesianRidge",
    "sklearn.linear_model._ridge.RidgeCV",
    "sklearn.neighbors._regression.KNeighborsRegressor",
    "sklearn.preprocessing._data.Normalizer",
    "sklearn.svm._classes.LinearSVR",
    "sklearn.svm._classes.SVR",
    "sklearn.tree._classes.DecisionTreeRegressor",
    # and the multilabel heads' one-vs-rest (heads.multilabel)
    "sklearn.multiclass.OneVsRestClassifier",
    "sklearn.preprocessing._label.LabelBinarizer",
})

#: The only functions a head file may name: this package's own (the naive Bayes head's cast
#: to float64). No numpy, scipy or scikit-learn function is ever trusted: a FunctionTransformer
#: holding one can call anything with the features, or with strings the file itself supplies.
TRUSTED_FUNCTIONS = frozenset({"heads.builtin._as_float64"})

#: How skops stores each kind of node; nodes stored any other way (methods, partials,
#: operator functions, objects rebuilt from ``__reduce__``) never come from a saved head.
_NODE_LOADERS = frozenset({
    "BytesNode", "CachedNode", "DictNode", "FunctionNode", "JsonNode", "ListNode", "MaskedArrayNode",
    "NdArrayNode", "ObjectNode", "TreeNode", "TupleNode", "TypeNode",
})
#: Sidecar entries that predictions depend on; :func:`save_head` stores them inside the head file
#: too, and :func:`load_head` refuses a sidecar that says otherwise.
HEAD_FACTS = ("classes", "layers", "fusion", "blocks", "model_sha256", "store_fingerprint", "head")
#: Marks a head file written with its facts: its top object is
#: ``{"featurestore_head": 1, "facts": {...}, "estimator": estimator}``. Older files hold the estimator alone.
_FORMAT_KEY = "featurestore_head"
_FORMAT = 1

#: The largest ``schema.json`` read (a head's arrays live in files of their own beside it).
_MAX_SCHEMA_BYTES = 64 << 20
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".sav")


def sidecar_path(path: str | Path) -> Path:
    """``head.skops`` -> ``head.skops.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_head(estimator: Any, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``estimator`` with skops and ``metadata`` as the JSON sidecar; return the head's path.

    The entries of ``metadata`` named in :data:`HEAD_FACTS` (classes, layers, fusion, input
    dimensions, model and store) are stored inside the head file as well, as plain strings and
    numbers, so a sidecar edited afterwards cannot relabel or rewire the head's predictions.
    """
    import skops.io as sio

    path = Path(path)
    if path.suffix != HEAD_SUFFIX:
        raise HeadModelFileError(f"head files are skops archives; name it with {HEAD_SUFFIX} (got {path.name})")
    path.parent.mkdir(parents=True, exist_ok=True)
    facts = json.loads(json.dumps({key: metadata[key] for key in HEAD_FACTS if key in metadata}, default=str))
    sio.dump({_FORMAT_KEY: _FORMAT, "facts": facts, "estimator": estimator}, path)
    metadata = {**metadata, "head_sha256": file_sha256(path)}
    write_bytes_atomic(sidecar_path(path), json.dumps(metadata, indent=1, sort_keys=True, default=str).encode())
    return path


def _check_archive(path: Path) -> None:
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise UnsafeHeadError(f"{path} looks like a pickle ({path.suffix}); pickles are never loaded. "
                              f"Re-save the head with `featurestore fit ... -o NAME{HEAD_SUFFIX}`")
    if not path.is_file():
        raise HeadFileNotFoundError(f"head file {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise UnsafeHeadError(f"{path} is not a skops archive; refusing to load it")
    with zipfile.ZipFile(path) as archive:
        if "schema.json" not in archive.namelist():
            raise UnsafeHeadError(f"{path} is a zip file but not a skops archive (no schema.json)")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The JSON metadata saved beside a head, after checking the head file against it.

    Raises
    ------
    UnsafeHeadError
        A pickle, or not a skops archive.
    HeadModelFileError
        The sidecar is missing or unreadable, or the head file's sha256 differs from the
        one the sidecar recorded when it was saved (sidecars written before the hash was
        recorded are not checked).
    """
    path = Path(path)
    _check_archive(path)
    side = sidecar_path(path)
    if not side.is_file():
        raise HeadModelFileError(f"{side} is missing: a head needs its sidecar (store fingerprint, layers, classes)")
    try:
        metadata = json.loads(side.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise HeadModelFileError(f"head sidecar {side} is not valid JSON ({exc}); refit the head") from None
    if not isinstance(metadata, dict):
        raise HeadModelFileError(f"head sidecar {side} is not a JSON object; restore it or refit the head")
    recorded = metadata.get("head_sha256")
    if recorded is not None and recorded != file_sha256(path):
        raise HeadModelFileError(
            f"head file {path} has changed since it was saved (its sha256 is not the one in {side.name}); "
            "it is damaged or was replaced: restore the original or refit the head")
    return metadata


def _schema_nodes(path: Path) -> Iterator[tuple[str, str]]:
    """``(loader, module.name)`` of every node in the archive's ``schema.json``, read as plain JSON.

    Every object skops would build is described by one node of the schema, however deeply it
    is nested, so reading them all here sees each one before anything is imported or built.
    """
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("schema.json")
        if info.file_size > _MAX_SCHEMA_BYTES:
            raise UnsafeHeadError(f"{path}: its schema.json is {info.file_size} bytes, more than any head's; "
                                  "not loading it")
        try:
            schema = json.loads(archive.read(info))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise HeadModelFileError(f"cannot read head file {path}: {type(exc).__name__}: its schema.json is "
                                     "not valid JSON; refit the head") from None
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if "__loader__" in node or "__class__" in node or "__module__" in node:
                parts = (node.get("__loader__"), node.get("__module__"), node.get("__class__"))
                if not all(isinstance(part, str) for part in parts):
                    raise UnsafeHeadError(f"{path}: its schema.json holds a malformed node; not loading it")
                yield parts[0], f"{parts[1]}.{parts[2]}"
            stack.extend(node.values())


def _check_types(path: Path) -> list[str]:
    """Refuse a head file naming any type or function outside the allowlists; return skops' untrusted set.

    Two independent readings must both agree: every node of the schema (including the ones
    skops trusts by default, such as numpy ufuncs) is in :data:`TRUSTED_TYPES` or registered with a
    head or, for a function, in :data:`TRUSTED_FUNCTIONS`; and every type skops itself reports as
    untrusted is too.
    """
    import skops.io as sio

    types = TRUSTED_TYPES | trusted_head_types()
    refused = set()
    for loader, name in _schema_nodes(path):
        if loader not in _NODE_LOADERS:
            refused.add(f"{name} (stored as {loader})")
        elif loader == "FunctionNode":
            if name not in TRUSTED_FUNCTIONS:
                refused.add(name)
        elif name not in types:
            refused.add(name)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        if refused:
            untrusted = []
        else:
            raise HeadModelFileError(f"cannot read head file {path}: {type(exc).__name__}: {exc}; "
                                     "refit the head") from None
    refused.update(name for name in untrusted if name not in types | TRUSTED_FUNCTIONS)
    if refused:
        raise UnsafeHeadError(f"{path} holds types or functions outside the allowlist ({', '.join(sorted(refused))}); "
                              "not loading it: a head from `featurestore fit` holds none of them")
    return untrusted


def load_head(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load a head saved by :func:`save_head`, refusing pickles, untrusted types and changed files.

    Returns
    -------
    (estimator, metadata)

    Raises
    ------
    UnsafeHeadError
        Not a skops archive, a pickle, a type outside :data:`TRUSTED_TYPES` and the classes
        registered with heads, or a function outside :data:`TRUSTED_FUNCTIONS`.
    HeadModelFileError
        The file changed since it was saved, its sidecar is missing, or loading it failed
        (whatever the loader raised).
    """
    import skops.io as sio

    path = Path(path)
    metadata = read_sidecar(path)
    untrusted = _check_types(path)
    try:
        loaded = sio.load(path, trusted=untrusted)
    except Exception as exc:
        raise HeadModelFileError(f"cannot load head file {path}: {type(exc).__name__}: {exc}; refit the head") from None
    estimator, facts = _unwrap(loaded, path)
    if facts is not None:
        _check_facts(facts, metadata, path)
    _check_sidecar(estimator, metadata, path, exact_classes=facts is None)
    return estimator, metadata


def _unwrap(loaded: Any, path: Path) -> tuple[Any, dict[str, Any] | None]:
    """``(estimator, facts)`` of a loaded head file; ``facts`` is None for files saved without them."""
    if not isinstance(loaded, dict):
        return loaded, None
    facts = loaded.get("facts")
    if loaded.get(_FORMAT_KEY) != _FORMAT or "estimator" not in loaded or not isinstance(facts, dict):
        raise HeadModelFileError(f"head file {path} is not a head saved by `featurestore fit` "
                                 f"(format {loaded.get(_FORMAT_KEY)!r}); refit the head")
    return loaded["estimator"], facts


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_facts(facts: dict[str, Any], metadata: dict[str, Any], path: Path) -> None:
    """Refuse a sidecar that disagrees with what the head file itself recorded."""
    side = sidecar_path(path).name
    for key in HEAD_FACTS:
        if key in facts and metadata.get(key) != facts[key]:
            raise HeadModelMismatchError(
                f"head sidecar {side} says {key} {_short(metadata.get(key))}, but head file {path} was saved with "
                f"{_short(facts[key])}; the sidecar was edited or belongs to another head: restore it or refit")


def _check_sidecar(estimator: Any, metadata: dict[str, Any], path: Path, *, exact_classes: bool) -> None:
    """Checks every head passes, with or without facts inside: distinct layers, labels within the classes.

    With ``exact_classes`` (a head saved without facts, whose sidecar alone names the classes)
    the head must predict exactly as many classes as the sidecar names.
    """
    side = sidecar_path(path).name
    layers = metadata.get("layers")
    if layers is not None and (not isinstance(layers, list) or not layers
                               or not all(isinstance(name, str) for name in layers) or len(set(layers)) != len(layers)):
        raise HeadModelMismatchError(f"head sidecar {side} lists layers {_short(layers)}: not distinct layer names; "
                                     "restore it or refit the head")
    classes = metadata.get("classes")
    if classes is None:
        return
    if not isinstance(classes, list) or not classes:
        raise HeadModelMismatchError(f"head sidecar {side} lists classes {_short(classes)}: not a list of class "
                                     "names; restore it or refit the head")
    labels = getattr(estimator, "classes_", None)
    if labels is None:
        return
    labels = np.asarray(labels)
    if labels.size == 0 or labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= len(classes) \
            or (exact_classes and len(labels) != len(classes)):
        raise HeadModelMismatchError(
            f"head file {path} predicts {len(labels)} class(es) ({_short(labels.tolist())}), but its sidecar {side} "
            f"names {len(classes)}; restore the sidecar or refit the head")
