"""featurestore: extract features once with onnxruntime, store them safely, iterate on heads.

This package never imports torch: reading a store or running an exported ONNX file
needs none. The one exception is opt-in: decoding JPEGs on the inference device
(:mod:`featurestore.device_decode`, ``extract --decode device``) imports torch when used.
"""

from ._version import __version__

from .decode import decode_image, preprocess_array
from .errors import (
    FeatureStoreError, ImageDecodeError, LayerNotInStoreError, ModelInputError, SourceError, SpecError, StoreError,
    StoreDamagedError, StoreLockedError, StoreMismatchError, StoreWriteError, UnsafeModelError, UnsafeStoreError,
    PackageError,
)
from .extract import RENAMED as _RENAMED
from .extract import ExtractConfig, ExtractReport, extract
from .from_arrays import write_arrays
from .migrate import migrate_store
from .session import FeatureModel
from .sources import ArraySource, CsvSource, FashionMnistSource, FolderSource, ImageSource, SourceItem, open_source
from .sources import TableSource, WebDatasetSource, ZipSource
from .spec import LayerSpec, ModelSpec, Preprocessing, WeightsInfo, read_spec
from .store import FeatureSet, FeatureStore, join_stores, open_store, resolve_layers, store_names
from .verify import verify_store



def __getattr__(name: str):
    """Former names (:data:`featurestore.extract.RENAMED`), with a DeprecationWarning naming the present one."""
    if name in _RENAMED:
        import warnings

        warnings.warn(f"featurestore.{name} is renamed {_RENAMED[name]}; import {_RENAMED[name]} instead",
                      DeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ArraySource",
    "CsvSource",
    "ExtractConfig",
    "ExtractReport",
    "FashionMnistSource",
    "FeatureModel",
    "FeatureSet",
    "FeatureStore",
    "FeatureStoreError",
    "FolderSource",
    "ImageDecodeError",
    "ImageSource",
    "LayerNotInStoreError",
    "LayerSpec",
    "ModelInputError",
    "ModelSpec",
    "PackageError",
    "Preprocessing",
    "SourceError",
    "SourceItem",
    "SpecError",
    "StoreDamagedError",
    "StoreError",
    "StoreLockedError",
    "StoreMismatchError",
    "StoreWriteError",
    "TableSource",
    "UnsafeModelError",
    "UnsafeStoreError",
    "WebDatasetSource",
    "WeightsInfo",
    "ZipSource",
    "__version__",
    "decode_image",
    "extract",
    "join_stores",
    "migrate_store",
    "open_source",
    "open_store",
    "preprocess_array",
    "read_spec",
    "resolve_layers",
    "store_names",
    "verify_store",
    "write_arrays",
]
