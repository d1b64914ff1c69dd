"""Lookahead drafter on hand-made contexts, with a stand-in target whose greedy next token is a
known function of the previous token (so the Jacobi window must converge to it)."""
import pytest
import torch

from specdec.drafters.lookahead import LookaheadDrafter

VOCAB = 50


def successor(tokens: torch.Tensor) -> torch.Tensor:
    return (tokens + 1) % VOCAB


def depths(parents: list[int]) -> list[int]:
    out = []
    for p in parents:
        out.append(1 if p < 0 else out[p] + 1)
    return out


def test_window_is_a_tree_with_the_original_positions():
    d = LookaheadDrafter(level=4, window=3, guess=2, pool_from_prompt=False)
    d.reset(torch.tensor([10, 11, 12]))
    d.levels = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    tree = d.propose(torch.tensor([10, 11, 12]))
    tokens, parents = tree.tokens.tolist(), tree.parents.tolist()
    # spine 1 -> 2 -> 3, and on spine node i the chain level1[i] -> level2[i]
    assert len(tree) == 9 and all(p < i for i, p in enumerate(parents))
    node = {t: i for i, t in enumerate(tokens)}
    assert parents[node[1]] == -1 and parents[node[2]] == node[1] and parents[node[3]] == node[2]
    for i, (lvl1, lvl2) in enumerate(((4, 7), (5, 8), (6, 9))):
        assert parents[node[lvl1]] == node[1 + i] and parents[node[lvl2]] == node[lvl1]
        # the original's position of (level l, column i) is root + i + l + 1, i.e. depth i + l + 1
        assert depths(parents)[node[lvl2]] == i + 2 + 1


def test_jacobi_window_converges_and_pool_proposes_the_targets_ngrams():
    n = 4
    d = LookaheadDrafter(level=n, window=5, guess=3, pool_from_prompt=False)
    context = torch.tensor([3, 17, 29])
    d.reset(context)
    for _ in range(8):
        tree = d.propose(context)
        d.observe(tree, successor(tree.tokens))
        context = torch.cat((context, successor(context[-1:])))  # one accepted token per step
        d.accepted(context, 1, 0)
    assert len(d.levels) == n - 1
    assert all(len(v) <= 3 for v in d.pool.values()) and d.pool
    # every pooled n-gram's last token is the target's output after the one before it
    for key, continuations in d.pool.items():
        for cont in continuations:
            assert cont[-1] == (cont[-2] + 1) % VOCAB
    # once the window has converged, the pool holds the exact continuation of some roots
    hits = [k for k, conts in d.pool.items() if tuple((k + j) % VOCAB for j in range(1, n)) in conts]
    assert hits
    root = hits[0]
    tree = d.propose(torch.tensor([root]))
    paths = set()
    for i in range(len(tree)):
        path, j = [], i
        while j >= 0:
            path.append(int(tree.tokens[j]))
            j = int(tree.parents[j])
        paths.add(tuple(reversed(path)))
    assert tuple((root + j) % VOCAB for j in range(1, n)) in paths


def test_prompt_ngrams_seed_the_pool():
    d = LookaheadDrafter(level=3, window=2, guess=2)
    d.reset(torch.tensor([5, 6, 7, 5, 6, 8]))
    assert set(d.pool[5]) == {(6, 7), (6, 8)}
    tree = d.propose(torch.tensor([1, 5]))
    assert {(int(tree.tokens[i]), int(tree.tokens[i + 1])) for i in range(len(tree) - 1)} >= {(6, 7)}


def test_pool_keeps_the_most_recent_guesses_per_key():
    d = LookaheadDrafter(level=2, window=1, guess=2, pool_from_prompt=False)
    d.reset(torch.tensor([0]))
    for ngram in ([1, 2], [1, 3], [1, 2], [1, 4]):
        d.remember(ngram)
    assert list(d.pool[1]) == [(2,), (4,)]


def test_engine_must_report_the_window_outputs():
    d = LookaheadDrafter()
    d.reset(torch.tensor([1, 2, 3]))
    d.propose(torch.tensor([1, 2, 3]))
    with pytest.raises(RuntimeError, match="observe"):
        d.propose(torch.tensor([1, 2, 3, 4]))
    # once the engine has reported in this sequence, a step it skipped (tree cut to nothing) is fine
    d.reset(torch.tensor([1, 2, 3]))
    tree = d.propose(torch.tensor([1, 2, 3]))
    d.observe(tree, successor(tree.tokens))
    d.propose(torch.tensor([1, 2, 3, 4]))
    assert len(d.propose(torch.tensor([1, 2, 3, 4, 5]))) > 0


@pytest.mark.parametrize("kwargs", [dict(level=1), dict(window=0), dict(guess=0), dict(level=3.0)])
def test_bad_sizes_are_rejected(kwargs):
    with pytest.raises(ValueError, match="lookahead"):
        LookaheadDrafter(**kwargs)


def test_window_updates_the_engine_cut_are_counted_and_output_stays_ar():
    """Near the context limit the engine cuts the tree; the window's outputs are then incomplete,
    the update is skipped, and the count says so."""
    from specdec.engine import SpeculativeEngine

    from helpers import tiny_llama

    model = tiny_llama(num_layers=2, vocab_size=64, initializer_range=0.3)
    prompt = list(range(1, 9))
    reference = SpeculativeEngine(model, max_length=len(prompt) + 30).generate(prompt, 30, set()).token_ids
    drafter = LookaheadDrafter(level=4, window=6, guess=4)
    out = SpeculativeEngine(model, drafter, max_length=len(prompt) + 30).generate(prompt, 30, set())
    assert out.token_ids == reference
    assert out.stats["skipped_window_updates"] > 0
    far = SpeculativeEngine(model, LookaheadDrafter(level=4, window=6, guess=4)).generate(prompt, 10, set())
    assert far.stats["skipped_window_updates"] == 0
