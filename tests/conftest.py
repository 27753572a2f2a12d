import ipaddress
import os
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# No test downloads anything: exports by name read the weight caches only (subprocesses inherit
# this). tests/export's own fixture lifts it for the tests of the online path, with sockets blocked.
os.environ["FEATURESTORE_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"


def _loopback(address) -> bool:
    try:
        return ipaddress.ip_address(address[0]).is_loopback
    except (ValueError, TypeError, IndexError):
        return address[0] == "localhost" if isinstance(address, tuple) and address else False


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    """Sockets may connect to this machine only (a local Ray instance), never beyond it."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
            raise OSError(f"tests may not use the network (connect to {address!r})")

    def connect(self, address, *args, **kwargs):
        guard(self, address)
        return real_connect(self, address, *args, **kwargs)

    def connect_ex(self, address, *args, **kwargs):
        guard(self, address)
        return real_connect_ex(self, address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture(scope="session")
def benchmark_cache(tmp_path_factory) -> Path:
    """One export and JPEG cache for every benchmark smoke test (the cache is keyed by content)."""
    return tmp_path_factory.mktemp("benchmark-cache")
