"""Acceptance rules: greedy on hand-made trees, and a chi-square test that speculative sampling
(chain with a draft q, trees of siblings) leaves the target's distribution unchanged."""
from __future__ import annotations

import pytest
import torch

from specdec.verify import greedy_accept, sample_accept, target_probs

V = 5


def one_hot_logits(argmaxes: list[int], vocab: int = 10) -> torch.Tensor:
    logits = torch.zeros(len(argmaxes), vocab)
    logits[torch.arange(len(argmaxes)), torch.tensor(argmaxes)] = 5.0
    return logits


def test_greedy_takes_the_longest_agreeing_path_and_the_bonus():
    #          node: 0  1  2  3  4  5
    parents = [-1, -1, 0, 1, 1, 4]
    tokens = [7, 3, 8, 4, 5, 6]
    # target argmax per row (row 0 = root, row i+1 = node i)
    argmax = [3, 1, 2, 9, 4, 6, 2]  # root wants 3 (node 1); after node 1 it wants 2: no child has it
    path, bonus = greedy_accept(one_hot_logits(argmax), tokens, parents)
    assert path == [1] and bonus == 2  # node 1 accepted, neither child (4, 5) equals 2
    argmax[2] = 5  # now after node 1 the target wants 5 = node 4, and after node 4 it wants 6 = node 5
    path, bonus = greedy_accept(one_hot_logits(argmax), tokens, parents)
    assert path == [1, 4, 5] and bonus == 2  # bonus = argmax after node 5 (row 6)


def test_greedy_with_no_match_or_empty_tree_is_the_target_token():
    assert greedy_accept(one_hot_logits([4, 0, 0]), [1, 2], [-1, 0]) == ([], 4)
    assert greedy_accept(one_hot_logits([6]), [], []) == ([], 6)


def test_greedy_prefers_the_deeper_of_two_agreeing_branches():
    parents = [-1, 0, -1, 2, 3]
    tokens = [1, 2, 1, 3, 4]  # duplicate first-level token 1 (two branches start alike)
    argmax = [1, 2, 0, 3, 4, 9]
    assert greedy_accept(one_hot_logits(argmax), tokens, parents) == ([2, 3, 4], 9)


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    probs = target_probs(logits, 1.0, top_p=0.7)
    torch.testing.assert_close(probs, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))


# --- the statistical test -----------------------------------------------------------------------

def _target():
    """A tiny-vocabulary 'model': p(first token) and p(second | first), as exact distributions."""
    g = torch.Generator().manual_seed(1)
    first = torch.softmax(torch.randn(V, generator=g) * 1.5, 0)
    second = torch.softmax(torch.randn(V, V, generator=g) * 1.5, 1)
    return first, second


def _draft():
    g = torch.Generator().manual_seed(2)
    return torch.softmax(torch.randn(V, generator=g), 0), torch.softmax(torch.randn(V, V, generator=g), 1)


def _chi_square_p_value(counts: torch.Tensor, expected_probs: torch.Tensor) -> float:
    expected = expected_probs * counts.sum()
    keep = expected > 0
    assert counts[~keep].sum() == 0, "drew a token the target gives probability 0"
    stat = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64), stat.double() / 2))


def _first_two(path, bonus, tokens, first_rows):
    emitted = [tokens[i] for i in path] + [bonus]
    if len(emitted) < 2:  # nothing accepted: the second token is the target's next draw
        emitted.append(int(torch.multinomial(first_rows[emitted[0]], 1)))
    return emitted[0], emitted[1]


def _chain_with_draft_q(gen):
    p1, p2 = _target()
    q1, q2 = _draft()
    a = int(torch.multinomial(q1, 1, generator=gen))
    b = int(torch.multinomial(q2[a], 1, generator=gen))
    probs = torch.stack([p1, p2[a], p2[b]])  # rows: root, after a, after b (its content is irrelevant)
    draft_probs = torch.stack([q1, q2[a]])
    path, bonus = sample_accept(probs, [a, b], [-1, 0], draft_probs, gen)
    return [a, b], path, bonus


def _sibling_tree_one_hot(gen):
    """Deterministic proposals: three siblings at the root, two children under the first two."""
    p1, p2 = _target()
    tokens = [0, 3, 1, 2, 4, 1, 0]
    parents = [-1, -1, -1, 0, 0, 1, 1]
    probs = torch.stack([p1] + [p2[t] for t in tokens])
    path, bonus = sample_accept(probs, tokens, parents, None, gen)
    return tokens, path, bonus


def _iid_siblings_with_q(gen):
    """Siblings drawn independently from the draft q (duplicates possible), q passed along."""
    p1, p2 = _target()
    q1, _ = _draft()
    tokens = torch.multinomial(q1, 3, replacement=True, generator=gen).tolist()
    probs = torch.stack([p1] + [p2[t] for t in tokens])
    path, bonus = sample_accept(probs, tokens, [-1, -1, -1], torch.stack([q1] * 3), gen)
    return tokens, path, bonus


@pytest.mark.parametrize("scheme", [_chain_with_draft_q, _sibling_tree_one_hot, _iid_siblings_with_q])
def test_speculative_sampling_keeps_the_target_distribution(scheme):
    p1, p2 = _target()
    exact = (p1[:, None] * p2).flatten()  # joint of the first two emitted tokens
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    counts = torch.zeros(V * V)
    accepted = 0
    for _ in range(10000):
        tokens, path, bonus = scheme(gen)
        accepted += len(path)
        a, b = _first_two(path, bonus, tokens, p2)
        counts[a * V + b] += 1
    assert accepted > 0  # the drafts are really used, not always rejected
    assert _chi_square_p_value(counts, exact) > 1e-3


def test_the_chi_square_test_detects_a_biased_rule():
    """Control: keeping every drafted token unchecked would be flagged."""
    p1, p2 = _target()
    q1, q2 = _draft()
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(V * V)
    for _ in range(10000):
        a = int(torch.multinomial(q1, 1, generator=gen))
        b = int(torch.multinomial(q2[a], 1, generator=gen))
        counts[a * V + b] += 1
    assert _chi_square_p_value(counts, (p1[:, None] * p2).flatten()) < 1e-6


def test_exact_acceptance_probability_of_one_draft_token():
    """P(accept x) = Σ_x q(x) min(1, p(x)/q(x)) = Σ min(p, q)."""
    p1, _ = _target()
    q1, _ = _draft()
    gen = torch.Generator().manual_seed(3)
    hits = 0
    draws = 6000
    for _ in range(draws):
        a = int(torch.multinomial(q1, 1, generator=gen))
        path, _ = sample_accept(torch.stack([p1, p1]), [a], [-1], q1[None], gen)
        hits += len(path)
    expected = float(torch.minimum(p1, q1).sum())
    assert abs(hits / draws - expected) < 4 * (expected * (1 - expected) / draws) ** 0.5


def _chain_and_lookup_branch(gen):
    """What SD2's sampled chain plus its lookup branch builds: a chain a -> b drawn from q, and the
    lookup's fixed continuation (1, 3) merged in (``Proposal.with_branch``): where a == 1 it shares
    node a and hangs 3 beside the drawn b (one-hot q), else it is a one-hot sibling of a."""
    from specdec.tree.proposal import Proposal

    p1, p2 = _target()
    q1, q2 = _draft()
    a = int(torch.multinomial(q1, 1, generator=gen))
    b = int(torch.multinomial(q2[a], 1, generator=gen))
    chain = Proposal([a, b], [-1, 0], [0, -1], [1, 1], torch.stack([q1, q2[a]]))
    tree, _ = chain.with_branch([1, 3])
    probs = torch.stack([p1] + [p2[t] for t in tree.tokens])  # a depth-2 node's row is never read here
    path, bonus = sample_accept(probs, tree.tokens, tree.parents, tree.draft_probs, gen)
    return tree.tokens, path, bonus


@pytest.mark.slow
def test_a_drawn_chain_with_one_hot_lookup_siblings_keeps_the_target_distribution():
    p1, p2 = _target()
    exact = (p1[:, None] * p2).flatten()
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(V * V)
    shapes = {"shared": 0, "beside": 0}
    lookup_kept = 0
    for _ in range(10000):
        tokens, path, bonus = _chain_and_lookup_branch(gen)
        shapes["shared" if len(tokens) == 3 and tokens[0] == 1 else "beside"] += 1
        lookup_kept += any(i >= 2 for i in path)  # nodes after the chain's two are lookup's
        a, b = _first_two(path, bonus, tokens, p2)
        counts[a * V + b] += 1
    assert min(shapes.values()) > 500 and lookup_kept > 500  # both shapes occur, lookup nodes are kept
    assert _chi_square_p_value(counts, exact) > 1e-3


def test_a_node_its_own_q_row_never_proposed_is_an_internal_error():
    p1, _ = _target()
    q = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0])  # not one-hot, and 0 at the node's token 3
    with pytest.raises(AssertionError, match="q = 0 in its own draft_probs row"):
        for _ in range(50):  # whether it is reached does not depend on the draw
            sample_accept(torch.stack([p1, p1]), [3], [-1], q[None], torch.Generator().manual_seed(0))
