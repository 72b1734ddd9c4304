"""The text judge: interpolated Kneser–Ney probabilities (normalised, hand-computed on a toy corpus), the
judge's words, and the unigram entropy that catches repetition."""
import math

import numpy as np
import pytest

from trimdm.data.kjv_judge import BOS, KneserNey, kjv_judge, score_texts, unigram_entropy, words

TOY = [["a", "b", "a", "c"], ["b", "a", "b"]]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_probabilities_normalise_over_the_vocabulary_for_any_context(order):
    lm = KneserNey.fit(TOY, order)
    assert lm.vocab_size == 4  # a, b, c and <unk>
    for context in ([], ["a"], ["a", "b"], ["b", "a"], ["c", "c"], ["zz", "a"], ["a", "zz"], [BOS], ["c"]):
        p = lm.distribution(context)
        assert p.shape == (4,) and (p > 0).all(), context
        assert abs(p.sum() - 1) < 1e-12, (order, context, p.sum())


def test_known_counts_on_a_toy_corpus():
    """A bigram model by hand. Bigrams (<s> a) (a b) (b a) (a c) (<s> b) (a b) (b a): raw counts 1, 2, 2, 1, 1.
    Continuation counts of the unigrams: a after {<s>, b}: 2, b after {a, <s>}: 2, c after {a}: 1."""
    lm = KneserNey.fit(TOY, 2)
    assert [lm.count(g) for g in (["a"], ["b"], ["c"], ["a", "b"], ["b", "a"], [BOS, "a"], ["c", "a"])] == [3, 3, 1, 2,
                                                                                                            2, 1, 0]
    d1 = 1 / (1 + 2 * 2)  # continuation counts of counts: n1 = 1 (c), n2 = 2 (a, b)
    d2 = 3 / (3 + 2 * 2)  # bigram counts of counts: n1 = 3, n2 = 2
    assert lm.discounts == pytest.approx([d1, d2])
    p1 = {w: (max(c - d1, 0) + d1 * 3 / 4) / 5 for w, c in (("a", 2), ("b", 2), ("c", 1), ("<unk>", 0))}
    assert p1["<unk>"] == pytest.approx(d1 * 3 / 4 / 5)
    after_a = {w: (max(c - d2, 0) + d2 * 2 * p1[w]) / 3 for w, c in (("a", 0), ("b", 2), ("c", 1), ("<unk>", 0))}
    np.testing.assert_allclose(lm.distribution(["a"]), [after_a[w] for w in ("a", "b", "c", "<unk>")], rtol=1e-12)
    np.testing.assert_allclose(lm.distribution(["c"]), [p1[w] for w in ("a", "b", "c", "<unk>")], rtol=1e-12)
    # a document's start keeps raw counts: (<s> a) 1, (<s> b) 1, two distinct first words
    start = {w: (max(c - d2, 0) + d2 * 2 * p1[w]) / 2 for w, c in (("a", 1), ("b", 1), ("c", 0), ("<unk>", 0))}
    np.testing.assert_allclose(lm.distribution([]), [start[w] for w in ("a", "b", "c", "<unk>")], rtol=1e-12)
    # a text is scored word by word from a document's start; an unseen word is <unk>
    np.testing.assert_allclose(lm.log2probs(["b", "a", "zz"]),
                               np.log2([start["b"], lm.distribution(["b"])[0], lm.distribution(["a"])[3]]))


def test_below_the_top_order_a_word_counts_by_the_contexts_it_follows():
    """(b a) occurs three times, always after x; (b c) once, after y. The top order counts occurrences, the
    bigram level of a trigram model counts distinct words before (Kneser–Ney): one each, so a context it
    backs off from, (zz b), finds a and c equally likely; the bigram model itself does not."""
    docs = [["x", "b", "a"]] * 3 + [["y", "b", "c"]]
    tri, bi = KneserNey.fit(docs, 3), KneserNey.fit(docs, 2)
    assert tri.count(["b", "a"]) == 3 and tri.count(["b", "c"]) == 1 and tri.count(["x", "b", "a"]) == 3
    a, c = tri.index["a"], tri.index["c"]
    backed_off = tri.distribution(["zz", "b"])
    assert backed_off[a] == pytest.approx(backed_off[c], rel=1e-12)
    assert tri.distribution(["x", "b"])[a] > 0.5 > backed_off[a]
    assert bi.distribution(["b"])[bi.index["a"]] > 2 * bi.distribution(["b"])[bi.index["c"]]


def test_words_split_letters_from_punctuation():
    assert words("And God said,,, the LORD'S ear-ring.") == ["And", "God", "said", ",", ",", ",", "the", "LORD'S",
                                                             "ear", "-", "ring", "."]
    assert words("  ") == []


def test_unigram_entropy_on_toy_inputs():
    assert unigram_entropy([]) == 0.0
    assert unigram_entropy(["the"] * 7) == 0.0
    assert unigram_entropy(["a", "b"]) == pytest.approx(1.0)
    assert unigram_entropy(["a", "b", "c", "d"]) == pytest.approx(2.0)
    assert unigram_entropy(["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert unigram_entropy(["a", "a", "a", "b"]) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def test_the_kjv_judge_prefers_held_out_text_to_word_salad():
    judge = kjv_judge()
    assert judge.train_words > 800_000 and judge.lm.vocab_size > 10_000 and len(judge.heldout) == 30
    for context in ([], ["And", "God"], ["the", "the"], ["qq", ","]):
        assert abs(judge.lm.distribution(context).sum() - 1) < 1e-9
    real, salad = "In the beginning God created the heaven and the earth.", "And God said,,, the to and shall,, of of"
    s = score_texts(judge.lm, [real, salad])
    assert s.bits[0] / s.words[0] < s.bits[1] / s.words[1] - 2  # more than 2 bits per word apart
    assert list(s.unseen) == [0, 0] and s.entropy[0] > s.entropy[1]
