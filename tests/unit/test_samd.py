"""SAM decoding: the suffix automaton's matches against a brute-force search, the drafter's
chain, lossless greedy (alone and with an auxiliary drafter) and sampling through the engine."""
import random

import pytest
import torch

from specdec.drafters.recycling import RecyclingDrafter
from specdec.drafters.samd import SamdDrafter
from specdec.drafters.sd2 import SD2Drafter
from specdec.drafters.suffix_automaton import SuffixAutomaton
from specdec.engine import SpeculativeEngine

from helpers import PROMPT, tiny_llama


def brute_force_match(s: list[int]) -> tuple[int, int]:
    """The longest suffix of s that also ends earlier, and the end of its earliest occurrence."""
    n = len(s)
    for length in range(n - 1, 0, -1):
        for end in range(length - 1, n - 1):
            if s[end - length + 1:end + 1] == s[n - length:]:
                return length, end
    return 0, -1


def test_suffix_automaton_matches_equal_brute_force_on_random_strings():
    rng = random.Random(0)
    checked = 0
    for _ in range(1500):
        sam, text = SuffixAutomaton(), []
        alphabet = rng.choice([1, 2, 3, 5, 20])
        for _ in range(rng.randint(1, 40)):
            text.append(rng.randint(0, alphabet))
            sam.extend(text[-1])
            assert sam.longest_match() == brute_force_match(text), text
            checked += 1
    assert checked > 20000


def test_continuation_copies_after_the_earliest_occurrence():
    sam = SuffixAutomaton()
    sam.extend_all([7, 8, 9, 1, 2, 3, 7, 8, 9, 5, 6, 7, 8, 9])
    assert sam.continuation(3) == ([1, 2, 3], 3)
    assert sam.continuation(100) == ([1, 2, 3, 7, 8, 9, 5, 6, 7, 8, 9], 3)
    fresh = SuffixAutomaton()
    fresh.extend_all([1, 2, 3])
    assert fresh.continuation(5) == ([], 0)


def test_draft_length_grows_with_the_match():
    d = SamdDrafter(max_tokens=6, alpha=2.0)
    context = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 1])
    d.reset(context[:4])  # the rest arrives as "accepted" tokens
    assert d.propose(context).tokens.tolist() == [2, 3]  # match of 1 token: 2 tokens
    longer = torch.cat((context, torch.tensor([2, 3])))
    assert d.propose(longer).tokens.tolist() == [4, 5, 6, 7, 8]  # 3 matched: 6, capped at max_tokens - 1
    assert d.propose(longer, max_depth=2).tokens.tolist() == [4, 5]
    assert len(d.propose(torch.cat((longer, torch.tensor([60]))))) == 0


def tiny_sd2(target):
    draft = tiny_llama(num_layers=2, vocab_size=64, initializer_range=0.3, seed=3)
    return SD2Drafter(draft, exits=[1, 2], thresholds=[0.6, 0.0], tree=True, total_token=4, depth=2, top_k=2)


@pytest.mark.parametrize("aux", ["none", "recycling", "sd2"])
def test_samd_greedy_equals_ar(target, ar_tokens, aux):
    helper = {"none": None, "recycling": RecyclingDrafter(64), "sd2": tiny_sd2(target)}[aux]
    drafter = SamdDrafter(aux=helper, len_threshold=2)
    out = SpeculativeEngine(target, drafter).generate(PROMPT, 60, set())
    assert out.token_ids == ar_tokens
    assert out.new_tokens > out.decoding_steps
    assert out.stats["sam_accepted" if helper is None else "aux_rounds"] > 0


@pytest.mark.parametrize("kwargs, message", [(dict(max_tokens=1), "n_predicts"), (dict(alpha=0), "alpha"),
                                             (dict(len_threshold=0), "len_threshold")])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamdDrafter(**kwargs)


@pytest.mark.parametrize("method, argv, message", [
    ("samd", ["--aux", "eagle2"], "needs --aux-path"),
    ("samd", ["--samd_n_predicts", "1"], "n_predicts"),
    ("samd", ["--aux-path", "x"], "is for --aux eagle2 or sd2"),
    ("recycling", ["--output_id_topk", "4"], "needs 8 candidates"),
    ("recycling", ["--total-token", "1"], "counts the root"),
])
def test_bad_flags_are_refused_before_the_target_loads(method, argv, message):
    from evaluation.eval import EvalConfigError
    from evaluation.methods import run_method

    with pytest.raises(EvalConfigError, match=message):
        run_method(method, ["--model-id", "x", *argv])
