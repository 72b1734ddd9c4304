import os

import pytest

# Tiny models gain nothing from a second thread, and one thread per process never oversubscribes the
# cores when tests start subprocesses (torchrun workers, CLI runs).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One prepared copy of the tiny recipe's data for the whole session (prepare is cached)."""
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_tri_run(data_root, tmp_path_factory):
    """(prepared data directory, run directory) of one tiny tri-modal run shared by the smoke tests."""
    from trimdm.data.prepare import prepare
    from trimdm.recipes import tiny_tri
    from trimdm.train.trainer import train

    cfg = tiny_tri().override([f"data.root={data_root}"]).derive()
    data = prepare(cfg.data, log=lambda *a: None)
    run = tmp_path_factory.mktemp("tiny_tri_run")
    train(cfg, run, log=lambda *a: None, progress=False)
    return data.directory, run
