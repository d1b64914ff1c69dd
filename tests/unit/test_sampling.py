"""End to end: speculative sampling through the engine keeps the target's distribution.

The joint distribution of the first two new tokens of a tiny-vocabulary target is known exactly;
each method draws from it many times and a chi-square test compares. The models are *peaked*
(large initial weights, as trained models are), so a draft and target disagree in ways that
matter, and the draws are enough for the test to catch a subtle bias: a drafter that samples at
temperature 0.9 but reports its distribution at temperature 1 (a first-token error of 2% in total
variation) fails it (checked below). Both the first token's distribution (6 cells: the sharper
test) and the pair's (36 cells) are tested."""
from __future__ import annotations

import pytest
import torch

from sd2.draft_heads import DraftHeads
from sd2.eagle_head import EagleHead
from specdec.drafters.eagle import EagleDrafter
from specdec.drafters.heads import HeadsDrafter
from specdec.drafters.sd2 import SD2Drafter
from specdec.drafters.sps import SpeculativeSamplingDrafter
from specdec.engine import SpeculativeEngine
from specdec.types import DraftTree
from specdec.verify import target_probs

from helpers import WrappedDrafter, tiny_llama

V = 6
PROMPT = [1, 4, 2]
DRAWS = 4000
MANY_DRAWS = 20000  # what the 2% bias needs to fail at p < 1e-3 (and the SD2 chain case, to pass beside it)
PEAKED = 0.25  # initializer range: top-1 probabilities of 0.5-0.7 (0.15 is near-uniform, 0.35 near one-hot)


def models():
    """The target, and a draft that resembles it without equalling it (q close to p, not p):
    the target's first two layers with noise on every weight."""
    target = tiny_llama(num_layers=3, vocab_size=V, initializer_range=PEAKED, seed=4)
    draft = tiny_llama(num_layers=2, vocab_size=V, initializer_range=PEAKED, seed=4)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, weight in draft.named_parameters():
            weight.copy_(target.get_parameter(name))
            weight.add_(0.3 * weight.std() * torch.randn(weight.shape, generator=generator))
    return target, draft


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


def draw(target, drafter, temperature, top_p, prompt=PROMPT, draws=DRAWS) -> tuple[float, float]:
    """(the smaller chi-square p-value of the first token's and the pair's distribution against
    the exact ones, share of new tokens that were drafts)."""
    engine = SpeculativeEngine(target, drafter, temperature, top_p, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    counts = torch.zeros(V * V)
    drafts_kept = 0
    for _ in range(draws):
        out = engine.generate(prompt, 2, set())
        counts[out.token_ids[0] * V + out.token_ids[1]] += 1
        drafts_kept += out.new_tokens - out.decoding_steps
    exact = exact_two_token_distribution(target, temperature, top_p, prompt)
    first = chi_square_p_value(counts.view(V, V).sum(1), exact.view(V, V).sum(1))
    return min(first, chi_square_p_value(counts, exact)), drafts_kept / (2 * draws)


CASES = {
    # SD2 chain: drafts sampled from q (reported), with and without the target's top-p
    "sd2_chain": (dict(tree=False), 0.9, 1.0, 0),  # the setting of the bias test below, with as many draws
    "sd2_chain_top_p": (dict(tree=False), 0.9, 0.8, 0),
    # SD2 tree: top-k proposals, one-hot q
    "sd2_tree_top_p": (dict(tree=True, total_token=8, depth=2, top_k=2), 1.0, 0.8, 0),
    # a lookup branch beside the chain: its tokens are one-hot proposals
    "sd2_chain_lookup": (dict(tree=False), 0.9, 1.0, 3),
    # lookup-first: a round with a lookup continuation verifies it alone, the others sample a chain
    "sd2_chain_lookup_first": (dict(tree=False, lookup_first=True), 0.9, 1.0, 3),
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c == "sd2_chain" else c for c in CASES])
def test_sd2_sampling_keeps_the_target_distribution(case):
    settings, temperature, top_p, lookup = CASES[case]
    target, draft = models()
    drafter = SD2Drafter(draft, exits=[1, 2], thresholds=[0.6, 0.0], temperature=temperature, top_p=top_p,
                         lookup_tokens=lookup, **settings)
    # With a lookup branch the prompt repeats (1, 4), so prompt lookup proposes 2, 1, 4 beside the draft.
    p_value, kept = draw(target, drafter, temperature, top_p, PROMPT + [1, 4] if lookup else PROMPT,
                         MANY_DRAWS if case == "sd2_chain" else DRAWS)
    assert kept > 0.05  # drafts are really kept
    assert p_value > 1e-3


def test_sps_sampling_keeps_the_target_distribution():
    target, draft = models()
    drafter = SpeculativeSamplingDrafter(draft, V, temperature=0.8, top_p=0.9, num_draft_tokens=2)
    p_value, kept = draw(target, drafter, 0.8, 0.9)
    assert kept > 0.05 and p_value > 1e-3


@pytest.mark.parametrize("tree, size", [("dynamic", 8), ("static", 6)], ids=["eagle2", "eagle"])
def test_eagle_sampling_keeps_the_target_distribution(tree, size):
    """EAGLE's head (the target's last layer over its own features): top-k tree proposals, one-hot q."""
    target, _ = models()
    torch.manual_seed(0)
    drafter = EagleDrafter(EagleHead.for_target(target, "tiny"), tree=tree, total_token=size, depth=2, top_k=2)
    p_value, kept = draw(target, drafter, 1.0, 0.8)
    assert kept > 0.05 and p_value > 1e-3


@pytest.mark.parametrize("kind, tree", [("medusa", "static"), ("hydra", "dynamic")])
def test_medusa_and_hydra_sampling_keep_the_target_distribution(kind, tree):
    """Heads on the target's last feature (its own LM head to start): top-k tree proposals, one-hot q."""
    target, _ = models()
    torch.manual_seed(0)
    drafter = HeadsDrafter(DraftHeads.for_target(kind, target, 2), tree=tree, total_token=6, top_k=2)
    p_value, kept = draw(target, drafter, 1.0, 0.8)
    assert kept > 0.05 and p_value > 1e-3


class ReportsTemperatureOne(WrappedDrafter):
    """A broken drafter: samples its chain at temperature 0.9 but reports q at temperature 1."""

    def propose(self, context, max_depth=None, generator=None):
        tree = self.inner.propose(context, max_depth, generator)
        if tree.draft_probs is None:
            return tree
        q_at_one = tree.draft_probs.clamp(min=1e-30) ** 0.9  # softmax(l / 0.9) ** 0.9 ∝ softmax(l)
        return DraftTree(tree.tokens, tree.parents, q_at_one / q_at_one.sum(-1, keepdim=True))


@pytest.mark.slow
def test_the_test_catches_a_subtly_wrong_draft_distribution():
    target, draft = models()
    drafter = SD2Drafter(draft, exits=[1, 2], thresholds=[0.6, 0.0], temperature=0.9)
    p_value, _ = draw(target, ReportsTemperatureOne(drafter), 0.9, 1.0, draws=MANY_DRAWS)
    assert p_value < 1e-3
