import os

import pytest


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One prepared copy of the tiny recipe's data for the whole session (prepare is cached)."""
    root = tmp_path_factory.mktemp("data")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return str(root)
