"""The store's ``manifest.json``: schema version, fingerprint, model spec, shards, failures.

The manifest is the store's commit log: a shard exists for readers only once the
manifest names it. It is replaced atomically (temporary file, fsync, ``os.replace``,
fsync of the directory) after each shard, so a kill at any moment leaves either the
old or the new manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._atomic import write_bytes_atomic
from ._time import utc_timestamp
from .errors import StoreError
from .spec import ModelSpec

__all__ = ["MANIFEST_NAME", "STORE_SCHEMA_VERSION", "StoreConfig", "Manifest"]

MANIFEST_NAME = "manifest.json"
STORE_SCHEMA_VERSION = 1
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class StoreConfig:
    """Everything a store's rows depend on; its hash is the store's fingerprint.

    Parameters
    ----------
    model_sha256 : str
        sha256 of the ONNX file's bytes.
    backbone : str
        Backbone name from the model spec (for messages).
    layers : tuple of str
        Output names stored, each ``name:dim:pooling``.
    preprocessing : str
        Canonical JSON of the model's preprocessing.
    views : int
        Augmented views stored per image beside the clean one (view 0).
    augment : tuple of str
        Augmentations applied to views 1..views.
    dtype : {'float32', 'float16'}
        Storage dtype of the features.
    """

    model_sha256: str
    backbone: str
    layers: tuple[str, ...]
    preprocessing: str
    views: int = 0
    augment: tuple[str, ...] = ()
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "augment", tuple(self.augment))
        if self.dtype not in DTYPES:
            raise StoreError(f"dtype {self.dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
        if self.views < 0:
            raise StoreError(f"views must be >= 0, got {self.views}")
        if self.views and not self.augment:
            raise StoreError("views > 0 needs at least one augmentation (--augment)")

    @classmethod
    def from_spec(cls, spec: ModelSpec, model_sha256: str, *, views: int = 0,
                  augment: tuple[str, ...] = (), dtype: str = "float32") -> "StoreConfig":
        """The config of extracting with ``spec`` (a model file hashing to ``model_sha256``)."""
        layers = tuple(f"{layer.output}:{layer.dim}:{layer.pooling}" for layer in spec.layers)
        prep = json.dumps(asdict(spec.preprocessing), sort_keys=True, separators=(",", ":"))
        return cls(model_sha256, spec.backbone, layers, prep, views, tuple(augment), dtype)

    @property
    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of this config (the backbone name is for messages only)."""
        data = asdict(self)
        data.pop("backbone")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def differences(self, other: "StoreConfig") -> list[str]:
        """Human-readable differences between the store's config (self) and ``other``."""
        out = []
        if self.model_sha256 != other.model_sha256:
            out.append(f"model: store has {self.backbone} (sha256 {self.model_sha256[:12]}...), "
                       f"this run uses {other.backbone} (sha256 {other.model_sha256[:12]}...)")
        for field_name in ("layers", "preprocessing", "views", "augment", "dtype"):
            mine, theirs = getattr(self, field_name), getattr(other, field_name)
            if mine != theirs:
                out.append(f"{field_name}: store has {_show(mine)}, this run uses {_show(theirs)}")
        return out


def _show(value: Any) -> str:
    return ", ".join(value) if isinstance(value, tuple) else str(value)


class Manifest:
    """In-memory form of ``manifest.json``; :meth:`save` replaces the file atomically.

    Attributes
    ----------
    data : dict
        The JSON document: ``schema_version``, ``fingerprint``, ``config``, ``model_spec``,
        ``classes``, ``shards`` (``file``, ``rows``, ``sha256``, ``stats``), ``failures``
        (``path``, ``key``, ``error``, ``message``) and ``runs`` (provenance of each extract).
    """

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @classmethod
    def new(cls, config: StoreConfig, spec: ModelSpec) -> "Manifest":
        """A manifest for an empty store."""
        return cls({
            "schema_version": STORE_SCHEMA_VERSION,
            "fingerprint": config.fingerprint,
            "config": asdict(config),
            "model_spec": spec.to_dict(),
            "created": utc_timestamp(),
            "classes": [],
            "shards": [],
            "failures": [],
            "runs": [],
        })

    @classmethod
    def load(cls, store: str | Path) -> "Manifest":
        """Read ``STORE/manifest.json``, refusing unknown schema versions."""
        path = Path(store) / MANIFEST_NAME
        if not path.is_file():
            raise StoreError(f"{store} is not a feature store: {MANIFEST_NAME} is missing")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{path} is not valid JSON ({exc}); the store is damaged") from None
        if data.get("schema_version") != STORE_SCHEMA_VERSION:
            raise StoreError(
                f"{path} has store schema version {data.get('schema_version')!r}; this featurestore reads "
                f"version {STORE_SCHEMA_VERSION}"
            )
        from .shard import check_shard_name  # the shard layer sits below the manifest

        for shard in data.get("shards", []):
            check_shard_name(shard.get("file") if isinstance(shard, dict) else None)
        return cls(data)

    def save(self, store: str | Path) -> None:
        """Replace ``STORE/manifest.json`` atomically.

        The JSON is compact (one line; ``featurestore info --json`` or ``python -m json.tool``
        pretty-print it): indentation would switch Python to its pure-Python encoder, several
        times slower on a manifest of thousands of shards, and this runs after every shard.
        """
        self.data["updated"] = utc_timestamp()
        text = json.dumps(self.data, sort_keys=True, separators=(",", ":"))
        write_bytes_atomic(Path(store) / MANIFEST_NAME, text.encode())

    @property
    def config(self) -> StoreConfig:
        return StoreConfig(**self.data["config"])

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.data["model_spec"])

    @property
    def fingerprint(self) -> str:
        return self.data["fingerprint"]

    @property
    def shards(self) -> list[dict[str, Any]]:
        return self.data["shards"]

    @property
    def failures(self) -> list[dict[str, Any]]:
        return self.data["failures"]

    @property
    def rows(self) -> int:
        return sum(shard["rows"] for shard in self.shards)

    def add_shard(self, entry: dict[str, Any], classes: set[str]) -> None:
        """Record a committed shard and the labels it holds (call :meth:`save` afterwards)."""
        self.shards.append(entry)
        self.data["classes"] = sorted(set(self.data["classes"]) | classes)

    def add_failures(self, failures: list[dict[str, Any]]) -> int:
        """Record failures not seen before (same path and key); returns how many were new."""
        seen = {(f["path"], f["key"]) for f in self.failures}
        added = 0
        for failure in failures:
            if (failure["path"], failure["key"]) not in seen:
                self.failures.append(failure)
                seen.add((failure["path"], failure["key"]))
                added += 1
        return added
