"""Export tests never reach the network: sockets cannot connect, and the weight caches
(torch.hub's ``TORCH_HOME``, the Hugging Face Hub's ``HF_HOME``) are empty folders under tmp."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path_factory):
    """Block internet sockets and point the weight caches at empty tmp folders."""
    def refuse(self, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"tests may not use the network (connect to {address!r})")
        return real_connect(self, address, *args, **kwargs)

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    caches = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("TORCH_HOME", str(caches / "torch"))
    monkeypatch.setenv("HF_HOME", str(caches / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(caches / "hf" / "hub"))
    for key in ("FEATURESTORE_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    return caches
