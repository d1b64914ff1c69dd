"""Token Recycling: the adjacency matrix, the template's breadth-first expansion and the tree it
verifies against hand-worked cases; lossless greedy through the engine (sampling: test_sampling.py)."""
import numpy as np
import pytest
import torch

from specdec.drafters.recycling import PAPER_TREE, AdjacencyMatrix, RecyclingDrafter, template_parents
from specdec.tree.budget import AutoTreeBudget, FixedTreeBudget
from specdec.engine import SpeculativeEngine

from helpers import PROMPT

SMALL = ((0,), (1,), (0, 0), (0, 1), (1, 0))


def test_paper_tree_has_the_papers_shape():
    per_level = [sum(len(p) == d for p in PAPER_TREE) for d in range(1, 7)]
    assert per_level == [8, 21, 25, 15, 8, 3] and len(PAPER_TREE) == 80
    template_parents(PAPER_TREE)  # prefix-closed, parents first


def test_matrix_update_keeps_each_rows_top_k_and_the_last_row_of_a_repeated_token():
    m = AdjacencyMatrix(vocab_size=10, k=2)
    assert (m.table == -1).all()
    m.update([5, 7, 5], np.array([[1, 2], [3, 4], [8, 9]]))
    assert m.table[5].tolist() == [8, 9] and m.table[7].tolist() == [3, 4]
    assert (m.table[[0, 1, 2, 3, 4, 6, 8, 9]] == -1).all()


def test_breadth_first_expansion_of_the_template():
    m = AdjacencyMatrix(vocab_size=10, k=2)
    m.update([3, 4], np.array([[4, 6], [8, 9]]))  # 3 -> 4, 6;  4 -> 8, 9;  6 -> nothing yet
    # (0,) = 4, (1,) = 6, (0,0) = 8, (0,1) = 9, (1,0) = 6's first candidate: none
    assert m.expand(3, SMALL, template_parents(SMALL)) == [4, 6, 8, 9, -1]
    assert m.expand(5, SMALL, template_parents(SMALL)) == [-1] * 5


def test_tree_from_the_engines_logits_and_what_each_node_would_have_got():
    d = RecyclingDrafter(vocab_size=10, k=2, template=SMALL)
    d.reset(torch.tensor([1, 3]))
    assert len(d.propose(torch.tensor([1, 3]))) == 0  # an empty matrix drafts nothing
    logits = torch.zeros(2, 10)
    logits[0, [4, 6]] = torch.tensor([2.0, 1.0])  # after the root 3: 4, then 6
    logits[1, [8, 9]] = torch.tensor([1.0, 2.0])  # after 4: 9, then 8
    d.target_logits(torch.tensor([3, 4]), logits)
    tree = d.propose(torch.tensor([1, 3]))
    assert tree.tokens.tolist() == [4, 6, 9, 8] and tree.parents.tolist() == [-1, -1, 0, 0]
    # the real continuation was 4, 8: nodes (0,) and (0,1) would have been accepted
    d.accepted(torch.tensor([1, 3, 4, 8]), 2, 1)
    assert d.hits.tolist() == [1, 0, 0, 1, 0] and d.rounds == 1
    # a node's rate follows its hits, never above its parent's
    rates = d.rates()
    assert rates[3] > rates[2] and rates[0] >= rates[3]
    # a fixed budget verifies the likeliest nodes, a tree in template order
    d.budget = FixedTreeBudget(3)
    small = d.propose(torch.tensor([1, 3]))
    assert small.tokens.tolist() == [4, 8] and small.parents.tolist() == [-1, 0]
    # max_depth cuts deeper nodes
    assert d.propose(torch.tensor([1, 3]), max_depth=1).tokens.tolist() == [4, 6]


def test_matrix_starts_empty_per_question_unless_warm():
    for warm in (False, True):
        d = RecyclingDrafter(vocab_size=10, k=2, template=SMALL, warm=warm)
        d.reset(torch.tensor([3]))
        d.target_logits(torch.tensor([3]), torch.arange(10.0)[None])
        d.reset(torch.tensor([3]))
        assert (d.matrix.table[3] >= 0).all() == warm


def test_recycling_greedy_equals_ar_and_drafts_are_kept(target, ar_tokens):
    for drafter in (RecyclingDrafter(64), RecyclingDrafter(64, k=4, template=SMALL, budget=FixedTreeBudget(4))):
        out = SpeculativeEngine(target, drafter).generate(PROMPT, 60, set())
        assert out.token_ids == ar_tokens
        assert out.new_tokens > out.decoding_steps  # recycled candidates were accepted
        assert sum(out.accept_lengths) == out.new_tokens


def test_recycling_with_the_auto_budget_equals_ar(target, ar_tokens):
    engine = SpeculativeEngine(target)
    costs = engine.time_verification([1, 2, 4, 8, 16, 32, 64, 96], past=16, repeats=1)
    engine.drafter = RecyclingDrafter(64, budget=AutoTreeBudget(costs))
    out = engine.generate(PROMPT, 60, set())
    assert out.token_ids == ar_tokens and out.stats["verify_costs_ms"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=0), "k >= 1"),
    (dict(k=2), "rank 7"),
    (dict(template=((0,), (0, 0), (1, 1))), "after its parent"),
    (dict(template=((0,), (0,))), "distinct"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RecyclingDrafter(64, **kwargs)
