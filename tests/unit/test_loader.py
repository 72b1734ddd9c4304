import numpy as np
import pytest

from trimdm.data.loader import MixtureLoader, row_shares


class Rows:
    def __init__(self, n, tag, length):
        self.n, self.tag, self.length = n, tag, length

    def __len__(self):
        return self.n

    def rows(self, index):
        out = np.zeros((len(index), 4), dtype=np.int64)
        out[:, 0] = self.tag
        out[:, 1] = index
        return out


SOURCES = {"text": Rows(50, 0, 64), "image_text": Rows(37, 1, 20), "audio_text": Rows(23, 2, 40)}
TOKENS = {"text": 64.0, "image_text": 20.0, "audio_text": 40.0}


def loader(seed=0, rank=0, world=1, shares=None):
    shares = shares or {"text": 0.5, "image_text": 0.3, "audio_text": 0.2}
    return MixtureLoader(SOURCES, row_shares(shares, TOKENS), 8, seed, rank, world)


def test_token_shares_match_the_configured_ones():
    ld = loader()
    tokens = {t: 0.0 for t in SOURCES}
    for _ in range(500):
        for task, _ in ld.next_global():
            tokens[task] += TOKENS[task]
    total = sum(tokens.values())
    # apportionment keeps each task within one row of its target, so the error is O(1/steps)
    for t, share in {"text": 0.5, "image_text": 0.3, "audio_text": 0.2}.items():
        assert abs(tokens[t] / total - share) < 64 / total + 1e-9
    for task, served in ld.served.items():
        assert abs(served - 500 * 8 * ld.p[task]) <= 1


def test_resume_mid_epoch_is_exact():
    a = loader()
    for _ in range(13):
        a.next()
    state = a.state_dict()
    expected = [a.next() for _ in range(20)]
    b = loader()
    b.load_state_dict(state)
    for e in expected:
        assert np.array_equal(b.next().numpy(), e.numpy())


def test_ranks_partition_the_global_batch():
    single = loader()
    r0, r1 = loader(rank=0, world=2), loader(rank=1, world=2)
    for _ in range(10):
        full = single.next().numpy()
        both = np.concatenate([r0.next().numpy(), r1.next().numpy()])
        assert np.array_equal(full, both)


def test_every_row_of_an_epoch_is_served_once():
    ld = loader(shares={"text": 1.0})
    seen = [i for _ in range(6) for task, i in ld.next_global()]
    assert len(set(seen)) == 48 and max(seen) < 50  # no row twice before the epoch ends


def test_bad_mixture_is_an_error():
    with pytest.raises(ValueError, match="no task a positive share"):
        MixtureLoader(SOURCES, {}, 8, 0)
