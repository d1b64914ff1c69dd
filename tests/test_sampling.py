"""End to end: speculative sampling through the engine (SD2 chain with draft probabilities, SD2
tree with one-hot proposals, top-p) leaves the target's joint distribution of the first two new
tokens unchanged: a chi-square test on a tiny-vocabulary model against its exact distribution."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_llama

from specdec.drafters.sd2 import SD2Drafter
from specdec.engine import SpeculativeEngine
from specdec.verify import target_probs

V = 6
PROMPT = [1, 4, 2]
DRAWS = 2500


def exact_two_token_distribution(model, temperature, top_p, prompt=PROMPT) -> torch.Tensor:
    with torch.no_grad():
        first = target_probs(model(torch.tensor([prompt])).logits[0, -1:], temperature, top_p)[0]
        second = torch.stack([target_probs(model(torch.tensor([prompt + [a]])).logits[0, -1:], temperature, top_p)[0]
                              for a in range(V)])
    return (first[:, None] * second).flatten()


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's test, cells expected below 5 pooled into one."""
    expected = probs.double() * counts.sum()
    assert counts[expected == 0].sum() == 0, "drew a pair the target gives probability 0"
    small = expected < 5
    obs = torch.cat((counts[~small].double(), counts[small].double().sum().view(1)))
    exp = torch.cat((expected[~small], expected[small].sum().view(1)))
    keep = exp > 0
    stat = ((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64), stat / 2))


@pytest.mark.parametrize("tree, temperature, top_p, lookup", [(False, 0.9, 1.0, 0), (True, 1.0, 0.9, 0), (False, 0.9, 1.0, 3)],
                         ids=["chain_q", "tree_top_p", "chain_q_lookup"])
def test_engine_sampling_matches_the_target_distribution(tree, temperature, top_p, lookup):
    target = tiny_llama(num_layers=3, vocab_size=V, initializer_range=0.15, seed=4)
    draft = tiny_llama(num_layers=2, vocab_size=V, initializer_range=0.15, seed=5)  # a different model: q != p
    drafter = SD2Drafter(draft, exits=[1, 2], thresholds=[0.6, 0.0], tree=tree, total_token=8, depth=2, top_k=2,
                         temperature=temperature, lookup_tokens=lookup)
    # With a lookup branch the prompt repeats (1, 4), so prompt lookup proposes 2, 1, 4 beside the draft.
    prompt = PROMPT + [1, 4] if lookup else PROMPT
    engine = SpeculativeEngine(target, drafter, temperature, top_p, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    counts = torch.zeros(V * V)
    drafted = accepted = 0
    for _ in range(DRAWS):
        out = engine.generate(prompt, 2, set())
        counts[out.token_ids[0] * V + out.token_ids[1]] += 1
        drafted += sum(out.stats["exit_tokens"].values()) + out.stats["lookup_tokens"]
        accepted += out.new_tokens - out.decoding_steps
    assert drafted > 0 and accepted > 0  # drafts are proposed and some are kept
    assert chi_square_p_value(counts, exact_two_token_distribution(target, temperature, top_p, prompt)) > 1e-3
