import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def benchmark_cache(tmp_path_factory) -> Path:
    """One export and JPEG cache for every benchmark smoke test (the cache is keyed by content)."""
    return tmp_path_factory.mktemp("benchmark-cache")
