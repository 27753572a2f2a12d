"""Load state_dicts safely (``weights_only=True``) and report key mismatches clearly."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from featurestore.utils import file_sha256

from .errors import WeightsError, WeightsFileNotFoundError

__all__ = ["file_sha256", "state_dict_sha256", "load_weights_file", "seeded", "RANDOM_INIT_SEED"]

#: Seed of the random initialisation (``--random-init``, and architectures built before loading).
RANDOM_INIT_SEED = 0

_BATCHES_TRACKED = ".num_batches_tracked"


@contextmanager
def seeded() -> Iterator[None]:
    """Seed torch's CPU generator with :data:`RANDOM_INIT_SEED` for the duration (restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        yield


def state_dict_sha256(module: nn.Module) -> str:
    """Hex sha256 over a module's state_dict (names, dtypes, shapes and bytes, sorted by name)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict:
    """The tensors of a state_dict file: ``.safetensors``, or ``torch.save`` output read with
    ``torch.load(..., weights_only=True)`` (a bare state_dict, or a checkpoint dict holding one
    under ``state_dict`` or ``model``). Nothing but tensors and plain containers is unpickled.

    Raises
    ------
    WeightsError
        The file cannot be read as tensors, or holds no state_dict.
    """
    try:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise WeightsError(
            f"cannot read weights file {str(path)!r} as a state_dict ({type(exc).__name__}: {exc}); "
            "save it with torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {str(path)!r} holds a {type(state).__name__}, not a state_dict")
    return state


def load_weights_file(module: nn.Module, path: str | Path, training_only: tuple[str, ...] = (),
                      rename: Callable[[str], str] | None = None) -> str:
    """Load a state_dict file into ``module`` strictly; return the file's sha256.

    Accepts a bare state_dict or a checkpoint dict holding one under ``state_dict`` or
    ``model``, saved with ``torch.save`` (only tensors are unpickled:
    ``torch.load(..., weights_only=True)``) or as ``.safetensors``.

    Parameters
    ----------
    module : nn.Module
        The backbone to load into.
    path : str or Path
        The weights file.
    training_only : tuple of str, default=()
        Key prefixes of training-only heads the module was built without (GoogLeNet's
        ``aux1.``): the file's keys under them that the module lacks are dropped.
    rename : callable, optional
        Maps the file's key names to the module's (published weights saved under older names).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    WeightsError
        The file is not a state_dict, or its keys or shapes do not match the backbone.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileNotFoundError(f"weights file {str(path)!r} does not exist")
    state = read_state_dict(path)
    expected = module.state_dict()
    if rename is not None:
        state = {rename(str(k)): v for k, v in state.items()}
    if training_only:
        state = {k: v for k, v in state.items() if k in expected or not str(k).startswith(training_only)}
    # BatchNorm fills a num_batches_tracked that files saved before torch 0.4.1 lack (torchvision's
    # published ResNet and DenseNet weights among them); it plays no part in inference.
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith(_BATCHES_TRACKED))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        k for k in set(expected) & set(state)
        if isinstance(state[k], torch.Tensor) and tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", mismatched)):
            if keys:
                shown = ", ".join(keys[:10]) + (f" ... ({len(keys)} in all)" if len(keys) > 10 else "")
                parts.append(f"{label}: {shown}")
        raise WeightsError(
            f"weights file {str(path)!r} does not fit {type(module).__name__}: " + "; ".join(parts)
            + ". Check that the file was saved from this architecture."
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"weights file {str(path)!r} does not fit {type(module).__name__}: "
                           f"{str(exc).splitlines()[-1].strip()}") from None
    return file_sha256(path)
