"""``ExportConfig``: the export options, one source of ``featurestore export``'s flags and of the
``[[export]]`` keys of a pipeline file.

It lives in the core beside the model spec (the exporter's other vocabulary), so that the
command line and pipeline files know the options without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._config import option
from .spec import POOLINGS, PRECISIONS

__all__ = ["ExportConfig"]


@dataclass(frozen=True)
class ExportConfig:
    """What to export of a backbone (the keywords of :func:`export.export_backbone`).

    Parameters
    ----------
    layers : str, default='last'
        Layer names and shorthands, comma separated, each optionally ``NAME:POOL``.
    pooling : str, default='avg'
        Pooling of maps or tokens (``--pooling``, formerly ``--pool``, still accepted, as is the
        TOML key ``pool``; see :data:`featurestore.spec.POOLINGS`).
    weights : Path, optional
        A state_dict file (``.pth``/``.pt`` or ``.safetensors``).
    random_init : bool, default=False
        Export untrained (seeded) weights.
    precision : {'fp32', 'fp16', 'int8', 'auto'}, default='fp32'
    image_size : int, optional
        Input size override (square).
    grayscale : bool, default=False
        One input channel (``pixels`` only).
    offline : bool, default=False
        Take pretrained weights from the libraries' caches only, never downloading.
    calibrate : str, optional
        For ``int8`` and ``auto``: the image source to calibrate on (a folder, ``fashion-mnist:train``, ...).
    calibrate_count : int, default=128
        Calibration images drawn from it (seeded).
    """

    layers: str = option("last", "comma-separated layer names or shorthands: last (default), stages, all, logits; "
                                 "NAME:POOL overrides the pooling of one layer")
    pooling: str = option("avg", "pooling: of feature maps (avg, max, gem, avgmax, grid2, grid4, pyramid, none; "
                                 "default avg) or of "
                                 "transformer tokens (cls, mean, cls+mean, none; default cls, or mean without a "
                                 "class token); the other kind of layer keeps its default",
                          aliases=("--pool",), choices=POOLINGS)
    weights: Path | None = option(None, "state_dict file to load: .pth/.pt (torch.save(model.state_dict()), read "
                                        "with weights_only=True) or .safetensors")
    random_init: bool = option(False, "export untrained (seeded) weights; recorded as such in the spec",
                               kind="switch")
    precision: str = option("fp32", "compute precision of the backbone; inputs/outputs stay uint8/float32; int8 "
                                    "quantises the fp32 graph, calibrated on --calibrate; auto keeps int8 where "
                                    "this CPU has VNNI/AMX and its cosine to fp32 is >= 0.999, else fp32",
                            choices=(*PRECISIONS, "auto"))
    image_size: int | None = option(None, "input size override (square)")
    grayscale: bool = option(False, "one input channel (pixels backbone only)", kind="switch")
    offline: bool = option(False, "take pretrained weights from the caches only (torch.hub's $TORCH_HOME/hub/"
                                  "checkpoints, the Hugging Face Hub cache), never downloading; also "
                                  "FEATURESTORE_OFFLINE=1 or HF_HUB_OFFLINE=1",
                             kind="switch")
    calibrate: str | None = option(None, "for --precision int8 or auto (required there): images to calibrate on, any "
                                         "source extract takes (a folder of your images, fashion-mnist:train, ...)")
    calibrate_count: int = option(128, "calibration images drawn from --calibrate (seeded; 32 more, or a quarter "
                                       "as many, are held back to measure the cosine to fp32)")

    def as_keywords(self) -> dict[str, Any]:
        """The keywords of :func:`export.export_backbone`."""
        return asdict(self)
