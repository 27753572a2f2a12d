"""Every torchvision classification model by name, with the preprocessing of its default weights.

The preprocessing (resize, crop, interpolation, mean, std) is read from the weights enum's
transforms, which construct nothing that downloads; weights come from ``--weights FILE``
or ``--random-init``.
"""

from __future__ import annotations

from functools import lru_cache

from torch import nn

from featurestore.spec import Preprocessing

__all__ = ["torchvision_names", "torchvision_preprocessing", "torchvision_build", "torchvision_classes",
           "torchvision_training_only"]

#: Models whose pretrained weights are used without their training-only auxiliary classifiers and
#: with ``transform_input`` on (torchvision's builders do the same when given weights), with the
#: key prefixes of those auxiliary heads.
_AUXILIARY = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


@lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """Names of torchvision's classification models (``torchvision.models.list_models``)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def torchvision_preprocessing(name: str) -> Preprocessing:
    """What the model's default torchvision weights expect (their ``transforms()``)."""
    from torchvision.models import get_model_weights

    transform = get_model_weights(name).DEFAULT.transforms()
    crop = int(transform.crop_size[0])
    return Preprocessing(crop_size=(crop, crop), resize_size=max(crop, int(transform.resize_size[0])),
                         interpolation=transform.interpolation.value, mean=tuple(transform.mean),
                         std=tuple(transform.std))


def torchvision_build(name: str) -> nn.Module:
    """The architecture with fresh weights (nothing is downloaded).

    GoogLeNet and Inception-v3 are built as their pretrained weights run: without the auxiliary
    classifiers (used in training only) and with ``transform_input`` on.
    """
    from torchvision import models

    if name in _AUXILIARY:
        return models.get_model(name, weights=None, aux_logits=False, transform_input=True, init_weights=True)
    return models.get_model(name, weights=None)


def torchvision_training_only(name: str) -> tuple[str, ...]:
    """Key prefixes of the training-only auxiliary heads a weights file of ``name`` may hold (dropped)."""
    return _AUXILIARY.get(name, ())


def torchvision_classes(name: str) -> tuple[str, ...]:
    """Class names of the default weights (ImageNet-1k)."""
    from torchvision.models import get_model_weights

    return tuple(get_model_weights(name).DEFAULT.meta["categories"])
