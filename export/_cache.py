"""Pretrained weights files in the libraries' own caches: torch.hub's checkpoint folder and the
Hugging Face Hub cache, filled by those libraries' clients (never by HTTP code of ours)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

from .errors import WeightsDownloadError, WeightsNotCachedError

#: Environment variables that switch downloads off (as ``--offline`` does) when set to 1/true/yes/on.
OFFLINE_ENV = ("FEATURESTORE_OFFLINE", "HF_HUB_OFFLINE")

__all__ = ["is_offline", "OFFLINE_ENV", "hf_snapshot_revision", "torch_hub_checkpoint", "hf_hub_cache", "hf_hub_mode", "hf_hub_weights", "HF_WEIGHTS_FILES",
           "torch_hub_cached_files", "hf_cached_repos"]

#: Weights files of a Hugging Face repo, preferred first (as timm looks for them).
HF_WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def is_offline(offline: bool = False) -> bool:
    """True when ``offline`` is, or ``FEATURESTORE_OFFLINE`` / ``HF_HUB_OFFLINE`` is set true."""
    return offline or any(os.environ.get(key, "").strip().lower() in ("1", "true", "yes", "on")
                          for key in OFFLINE_ENV)


def hf_snapshot_revision(path: str) -> str | None:
    """The commit of a Hugging Face cache snapshot a file lies in (``.../snapshots/REV/FILE``), else None."""
    parts = os.path.normpath(path).split(os.sep)
    return parts[-2] if len(parts) > 2 and parts[-3] == "snapshots" else None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _fill(label: str, what: str) -> str:
    return (f"run `featurestore fetch {label}` on a connected machine and copy {what}, "
            f"or pass --weights PATH / --random-init")


def torch_hub_checkpoint(label: str, url: str, offline: bool) -> str:
    """The file of ``url`` in torch.hub's checkpoint cache (``torch.hub.get_dir()/checkpoints``).

    Downloaded there by ``torch.hub.download_url_to_file`` (progress bar, hash check of the file
    name's hash prefix) when missing and not ``offline``.

    Raises
    ------
    WeightsNotCachedError
        Offline and the file is not cached.
    WeightsDownloadError
        The download failed.
    """
    import torch.hub

    filename = os.path.basename(urlparse(url).path)
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    path = os.path.join(folder, filename)
    if os.path.isfile(path):
        return path
    fill = _fill(label, f"$TORCH_HOME/hub/checkpoints/{filename} into {folder}")
    if offline:
        raise WeightsNotCachedError(f"{label}: weights file {filename} is not in torch.hub's cache {folder} "
                                    f"(offline); {fill}")
    os.makedirs(folder, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(filename)
    try:
        torch.hub.download_url_to_file(url, path, match.group(1) if match else None, progress=True)
    except Exception as exc:  # network errors come in many types
        raise WeightsDownloadError(f"{label}: cannot download {url} into {folder} "
                                   f"({type(exc).__name__}: {_one_line(exc)}); {fill}") from None
    return path


def hf_hub_cache() -> str:
    """The Hugging Face Hub cache folder as the environment names it now (``HF_HUB_CACHE``,
    else ``HF_HOME/hub``, else huggingface_hub's default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


@contextmanager
def hf_hub_mode(offline: bool) -> Iterator[None]:
    """Hugging Face Hub access off (``offline``) or as configured, and its cache folder as
    :func:`hf_hub_cache` reads the environment, for the duration (huggingface_hub reads both
    once, at import)."""
    from huggingface_hub import constants

    before_env = {key: os.environ.get(key) for key in _OFFLINE}
    before = constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE
    cache = hf_hub_cache()
    if offline:
        os.environ.update(_OFFLINE)
    constants.HF_HUB_OFFLINE = offline or before[0]
    constants.HF_HUB_CACHE = cache
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE = before
        for key, value in before_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def hf_hub_weights(label: str, hub_id: str, offline: bool, filenames: tuple[str, ...] = HF_WEIGHTS_FILES) -> str:
    """The first of ``filenames`` in Hugging Face repo ``hub_id`` (``ORG/NAME[@REVISION]``) that the
    cache holds, else (online) the first the repo has, downloaded by ``hf_hub_download``.

    Raises
    ------
    WeightsNotCachedError
        Offline and none is cached.
    WeightsDownloadError
        The download failed or the repo has none of the files.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo, _, revision = hub_id.partition("@")
    cache = hf_hub_cache()
    for filename in filenames:
        found = try_to_load_from_cache(repo, filename, cache_dir=cache, revision=revision or None)
        if isinstance(found, str):
            return found
    folder = os.path.join(cache, "models--" + repo.replace("/", "--"))
    fill = _fill(label, f"the Hugging Face cache's {os.path.basename(folder)} into {cache}")
    if offline:
        raise WeightsNotCachedError(f"{label}: weights {filenames[0]} of Hugging Face repo {repo} are not in the "
                                    f"Hugging Face cache {cache} (offline); {fill}")
    with hf_hub_mode(False):
        for filename in filenames:
            try:
                return hf_hub_download(repo, filename, revision=revision or None, cache_dir=cache)
            except EntryNotFoundError as exc:
                if not isinstance(exc, LocalEntryNotFoundError):  # the repo lacks this file: try the next
                    continue
                failure: Exception = exc  # no connection: huggingface_hub reports a miss of its cache
            except Exception as exc:  # network and hub errors come in many types
                failure = exc
            raise WeightsDownloadError(f"{label}: cannot download {filename} of Hugging Face repo {repo} into "
                                       f"{cache} ({type(failure).__name__}: {_one_line(failure)}); {fill}") from None
    raise WeightsDownloadError(f"Hugging Face repo {repo} has none of {', '.join(filenames)}; "
                               f"pass --weights PATH or --random-init")


def torch_hub_cached_files() -> set[str]:
    """The file names in torch.hub's checkpoint cache now."""
    import torch.hub

    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    return {entry.name for entry in os.scandir(folder) if entry.is_file()} if os.path.isdir(folder) else set()


def hf_cached_repos() -> set[str]:
    """``ORG/NAME`` of every model repo the Hugging Face Hub cache has a folder for now
    (``models--ORG--NAME``); whether it holds a given file is for ``try_to_load_from_cache``."""
    cache = hf_hub_cache()
    if not os.path.isdir(cache):
        return set()
    return {entry.name[len("models--"):].replace("--", "/") for entry in os.scandir(cache)
            if entry.is_dir() and entry.name.startswith("models--")}
