import os

import pytest

# Tiny models gain nothing from a second thread, and one thread per process never oversubscribes the
# cores when tests start subprocesses (torchrun workers, CLI runs).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One prepared copy of the tiny recipe's data for the whole session (prepare is cached)."""
    return str(tmp_path_factory.mktemp("data"))
