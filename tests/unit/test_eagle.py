"""EAGLE / EAGLE-2 on a tiny random Llama: lossless greedy output with either tree, the features
the engine hands over, the static tree's choice and the dynamic tree's expansion and rerank
against hand-computed cases."""
from __future__ import annotations

import math

import pytest
import torch

from sd2.eagle_head import EagleHead
from specdec.drafters.eagle import EagleDrafter
from specdec.tree.budget import FixedTreeBudget
from specdec.tree.dynamic import TreeProposer
from specdec.tree.static import StaticTreeProposer, static_tree_choices
from specdec.engine import SpeculativeEngine
from specdec.llama import LlamaRunner, causal_mask

from helpers import PROMPT


def eagle(target, **kw) -> EagleDrafter:
    torch.manual_seed(0)
    return EagleDrafter(EagleHead.for_target(target, "tiny"), **kw)


@pytest.mark.parametrize("tree, size", [("dynamic", 30), ("dynamic", 4), ("static", 12)])
@pytest.mark.parametrize("passes", ["eager", "static"])
def test_greedy_output_equals_ar(target, ar_tokens, tree, size, passes):
    """Eager, and at fixed shapes (the target's passes and the head's: the CUDA-graph path on a CPU)."""
    drafter = eagle(target, tree=tree, total_token=size, depth=3, top_k=4, passes=passes)
    out = SpeculativeEngine(target, drafter, target_passes=passes).generate(PROMPT, 60, set())
    assert out.token_ids == ar_tokens
    assert sum(out.accept_lengths) == 60
    assert out.stats["rounds"] > 0 and out.stats["drafted_tokens"] > 0


def test_the_head_holds_the_targets_features_of_every_cached_token(target):
    """What the engine handed over equals a fresh forward's last-layer states (before the final norm)."""
    drafter = eagle(target, tree="dynamic", total_token=10, depth=2, top_k=3)
    out = SpeculativeEngine(target, drafter).generate(PROMPT, 30, set())
    ids = torch.tensor(PROMPT + out.token_ids)
    runner = LlamaRunner(target)
    n = drafter.draft.known
    assert len(PROMPT) + 30 - 2 <= n <= len(ids)  # the last step's cached rows are not handed over
    fresh = runner.run_layers(runner.embed(ids[:n]), runner.new_cache(n), range(runner.num_layers),
                              torch.arange(n), causal_mask(n, 0, "cpu"))[0]
    # Handed-over rows come from many-row verification passes, the fresh ones from one pass over all:
    # float32 reduction order differs by machine (1.4e-4 seen on an AVX2-only CPU).
    torch.testing.assert_close(drafter.draft.features[:n], fresh, atol=5e-4, rtol=1e-3)


def test_static_tree_choices_keep_the_likeliest_paths():
    # path values: (0) .5, (0,0) .25, (1) .2, then (0,1) .1 and (1,0) .1 tie (the smaller path first)
    assert static_tree_choices([0.5, 0.2], 4, 2) == [(0,), (1,), (0, 0), (0, 1)]
    assert static_tree_choices([0.5, 0.2], 3, 1) == [(0,), (1,)]  # depth 1 allows two paths only
    with pytest.raises(ValueError, match="rank accuracies"):
        static_tree_choices([0.5, 1.5], 4, 2)


class TableDraft:
    """A draft whose next-token log-probs depend only on the row's token: ``table[token]``."""

    head_size = 4

    def __init__(self, table: dict[int, list[float]], root_token: int):
        self.table, self.root_token = table, root_token
        self.context_rows, self.draft_rows = 0, 0
        self.row_tokens: list[int] = []

    def feed_context(self, context, max_rows):
        self.row_tokens = [self.root_token]
        self.context_rows, self.draft_rows = 1, 0
        return 1

    def cascade(self, upto, last):
        rows = self.row_tokens[upto - last:upto]
        return torch.tensor([self.table[t] for t in rows]).log(), 1

    def append_rows(self, tokens, positions, parent_rows):
        self.row_tokens += tokens.tolist()
        self.draft_rows += len(tokens)
        return len(self.row_tokens)

    def to_vocab(self, idx):
        return idx


# token -> next-token probabilities over 4 tokens
TABLE = {0: [0.1, 0.6, 0.3, 0.0], 1: [0.5, 0.1, 0.0, 0.4], 2: [0.0, 0.2, 0.7, 0.1], 3: [0.25, 0.25, 0.25, 0.25]}


def test_dynamic_tree_expansion_and_rerank_by_hand():
    """Root token 0; top-2 children 1 (.6), 2 (.3). Level 2 expands both: under 1 -> 0 (.30), 3 (.24);
    under 2 -> 2 (.21), 1 (.06). Reranked to 4 nodes: 1 (.6), 2 (.3), 1>0 (.30), 1>3 (.24)."""
    proposer = TreeProposer(TableDraft(TABLE, 0), FixedTreeBudget(5), depth=1, top_k=2)
    proposal = proposer.propose(torch.tensor([7, 0]), max_depth=4)
    paths = {}
    for i, (token, parent) in enumerate(zip(proposal.tokens, proposal.parents)):
        paths[i] = (paths[parent] if parent >= 0 else ()) + (token,)
    assert sorted(paths.values()) == [(1,), (1, 0), (1, 3), (2,)]
    assert all(p < i for i, p in enumerate(proposal.parents))
    assert proposal.predicted == pytest.approx(0.6 + 0.3 + 0.30 + 0.24)


def test_static_tree_proposes_each_paths_ranked_token_by_hand():
    proposer = StaticTreeProposer(TableDraft(TABLE, 0), [(0,), (1,), (0, 0), (0, 1), (1, 0)])
    proposal = proposer.propose(torch.tensor([7, 0]), max_depth=4)
    paths = {}
    for i, (token, parent) in enumerate(zip(proposal.tokens, proposal.parents)):
        paths[i] = (paths[parent] if parent >= 0 else ()) + (token,)
    # rank 0/1 after 0: 1, 2; after 1: 0, 3; after 2: 2
    assert list(paths.values()) == [(1,), (2,), (1, 0), (1, 3), (2, 2)]
    assert proposal.predicted == pytest.approx(0.6 + 0.3 + 0.30 + 0.24 + 0.21)
    assert math.isclose(sum(TABLE[0]), 1.0)


def test_bad_settings_are_refused(target):
    with pytest.raises(ValueError, match="tree must be 'static' or 'dynamic'"):
        eagle(target, tree="medusa")
    with pytest.raises(ValueError, match="prefixes are all choices"):
        StaticTreeProposer(TableDraft(TABLE, 0), [(0,), (1, 0)])


def test_static_tree_choices_per_depth_rates():
    # depth 1: (0) .6, (1) .3; depth 2 rates .2/.1: (0,0) .12, (1,0) .06, (0,1) .06
    assert static_tree_choices([[0.6, 0.3], [0.2, 0.1]], 4, 2) == [(0,), (1,), (0, 0), (0, 1)]
