"""``featurestore fetch NAME...``: fill the libraries' weight caches on a connected machine."""

from __future__ import annotations

import argparse


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="download backbones' pretrained weights into the libraries' caches",
        description="Download the pretrained weights `featurestore export NAME` takes into the libraries' "
                    "own caches: torch.hub's $TORCH_HOME/hub/checkpoints for torchvision names (NAME, "
                    "NAME:ENUM), the Hugging Face Hub cache ($HF_HOME/hub or $HF_HUB_CACHE) for timm:NAME, "
                    "timm:NAME.TAG, timm:hf-hub:ORG/REPO, hf:ORG/REPO[@REVISION] (config, image processor "
                    "config, model card and weights) and open_clip:ARCH/TAG. Copy the filled caches to an "
                    "air-gapped machine and export there with --offline. Weights already cached are not "
                    "downloaded again; `featurestore layers --list --cached` lists what is there.",
    )
    p.add_argument("backbones", nargs="+", metavar="NAME", help="backbone names, as `featurestore export` takes them")
    p.add_argument("--offline", action="store_true",
                   help="only check that the weights are cached (also FEATURESTORE_OFFLINE=1 or HF_HUB_OFFLINE=1)")
    return p


def run(args: argparse.Namespace) -> int:
    from export import fetch_weights
    from featurestore._atomic import file_sha256

    for name in args.backbones:
        path, source = fetch_weights(name, offline=args.offline)
        print(f"{name}: {path} ({source}, sha256 {file_sha256(path)})")
    return 0
