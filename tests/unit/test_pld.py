"""Prompt lookup drafter on hand-made contexts."""
import pytest
import torch

from specdec.drafters.pld import PromptLookupDrafter


def proposal(drafter, context):
    tree = drafter.propose(torch.tensor(context))
    assert tree.parents.tolist() == list(range(-1, len(tree) - 1))  # always a chain
    return tree.tokens.tolist()


def test_longest_ngram_wins_and_earliest_occurrence_is_copied():
    d = PromptLookupDrafter(max_ngram_size=3, num_pred_tokens=4)
    # "7 8 9" occurs at 0 and at 6; the earliest is copied: 1 2 3 4 follows it.
    ctx = [7, 8, 9, 1, 2, 3, 7, 8, 9, 5, 6, 4, 7, 8, 9]
    assert proposal(d, ctx) == [1, 2, 3, 7]
    # Only the last token (9) occurred before: fall back to a 1-gram match.
    assert proposal(d, [3, 9, 4, 4, 5, 9]) == [4, 4, 5, 9]
    # 2-gram "4 5" matches though "x 4 5" does not.
    assert proposal(d, [4, 5, 6, 1, 4, 5]) == [6, 1, 4, 5]


def test_continuation_is_cut_at_the_end_of_the_context():
    d = PromptLookupDrafter(max_ngram_size=2, num_pred_tokens=10)
    assert proposal(d, [1, 2, 3, 1, 2]) == [3, 1, 2]


def test_no_match_proposes_nothing():
    d = PromptLookupDrafter()
    assert proposal(d, [1, 2, 3, 4]) == []
    assert proposal(d, [5]) == []


def test_min_ngram_size_excludes_short_matches():
    d = PromptLookupDrafter(max_ngram_size=3, num_pred_tokens=5, min_ngram_size=2)
    assert proposal(d, [3, 9, 4, 4, 5, 9]) == []


@pytest.mark.parametrize("kwargs", [dict(max_ngram_size=0), dict(max_ngram_size=2, min_ngram_size=3),
                                    dict(min_ngram_size=0), dict(num_pred_tokens=0), dict(max_ngram_size=2.5)])
def test_bad_sizes_are_rejected(kwargs):
    with pytest.raises(ValueError, match="PLD"):
        PromptLookupDrafter(**kwargs)
