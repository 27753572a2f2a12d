"""featurestore: extract features once with onnxruntime, store them safely, iterate on heads.

This package never imports torch: reading a store or running an exported ONNX file
needs none.
"""

__version__ = "0.1.0"

from .decode import decode_image, preprocess_array
from .errors import FeatureStoreError, ImageDecodeError, ModelInputError, SpecError
from .spec import LayerSpec, ModelSpec, Preprocessing, WeightsInfo, read_spec

__all__ = [
    "FeatureStoreError",
    "ImageDecodeError",
    "LayerSpec",
    "ModelInputError",
    "ModelSpec",
    "Preprocessing",
    "SpecError",
    "WeightsInfo",
    "__version__",
    "decode_image",
    "preprocess_array",
    "read_spec",
]
