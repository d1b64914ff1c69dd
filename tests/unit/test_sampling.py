"""End to end: speculative sampling through the engine keeps the target's distribution over
multi-token drafts, for every drafter.

A tiny-vocabulary target (V tokens) generates 3 tokens, so the first step may draft 2 deep (and
each drafter here does, asserted): its first token is a kept depth-1 draft, a draw from what
rejections left of p, or the target's own; its second a kept depth-2 draft, a draw from the
residual after depth-2 rejections, or the bonus after one kept draft; its third the bonus after two
kept drafts or the next step's token (after the target's cache was compacted to the kept path). The
joint distribution of the three is known exactly from the target's own probabilities; each drafter
draws from it DRAWS times and chi-square tests compare the first token's distribution, the pair's
and the triple's.

The models are *peaked* (large initial weights, as trained models are) and every draft differs from
the target (noise on its own weights), so drafts at depth 1 and at depth 2 are both kept and
rejected: counted per drafter, and asserted, so that no test passes by drafting nothing. The draws
are enough for the same test to fail planted breakages at depth 2 (``test_the_test_fails_*``: q
reported from the wrong row, a free branch's q not one-hot; those tried by hand are listed in
docs/lossless.md). ``test_every_drafted_token_has_q_above_0_inside_the_draft_vocabulary`` checks
the reduced draft vocabulary, int8 draft weights, fixed-shape passes and EAGLE's reduced head
without drawing much; two cases of the distribution test run with them on.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache

import pytest
import torch

from sd2.draft_heads import DraftHeads
from sd2.draft_spec import DraftSpec
from sd2.eagle3_head import Eagle3Head
from sd2.eagle_head import EagleHead
from sd2.exit_adapters import attach_exit_adapters, new_exit_adapters
from specdec.drafters.eagle import EagleDrafter
from specdec.drafters.eagle3 import Eagle3Drafter
from specdec.drafters.heads import HeadsDrafter
from specdec.drafters.lookahead import LookaheadDrafter
from specdec.drafters.pld import PromptLookupDrafter
from specdec.drafters.recycling import RecyclingDrafter
from specdec.drafters.rest import RestDrafter
from specdec.drafters.samd import SamdDrafter
from specdec.drafters.sd2 import SD2Drafter
from specdec.drafters.sps import SpeculativeSamplingDrafter
from specdec.engine import SpeculativeEngine
from specdec.rest_datastore import Datastore
from specdec.tree import children_lists, depths
from specdec.types import DraftTree
from specdec.verify import target_probs

from helpers import WrappedDrafter, tiny_llama

V = 5
PROMPT = [1, 4, 2]
REPEATING = [0, 1, 2, 0, 1]  # (0, 1) repeats: prompt lookup and the automaton propose 2, 0 (p = 0.35, then 0.63)
NEW = 3  # tokens generated: the first step's budget is 2 drafted tokens
DRAWS = 1500
DEEP_DRAWS = 4000  # for drafts three deep (see CASES)
ALPHA = 1e-3  # a correct drafter fails one of its three tests with probability below this
PEAKED = 0.25  # initializer range: top-1 probabilities of 0.5-0.7 (0.15 is near-uniform, 0.35 near one-hot)
DRAFT_VOCAB = [0, 2, 3, 4]  # a reduced draft vocabulary: token 1 (p = 0.53 after PROMPT) is never drafted


@contextmanager
def one_thread():
    """Models this small run fastest on one thread (on a loaded machine two threads wait on each
    other: a hundred times slower seen on 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def noisy(module: torch.nn.Module, scale: float, seed: int) -> torch.nn.Module:
    """``module`` with noise on every weight matrix (``scale`` times its spread): a draft that
    resembles what it was made from without equalling it."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in module.parameters():
            if weight.dim() > 1:
                weight.add_(scale * weight.std() * torch.randn(weight.shape, generator=generator))
    return module


@cache
def _models():
    target = tiny_llama(num_layers=3, vocab_size=V, initializer_range=PEAKED, seed=4)
    draft = tiny_llama(num_layers=2, vocab_size=V, initializer_range=PEAKED, seed=4)
    draft.load_state_dict(target.state_dict(), strict=False)  # the target's first two layers
    return target, noisy(draft, 0.3, 5)


def models():
    """The target, and a draft made of the target's first two layers with noise on every weight
    (q close to p, not p); fresh copies, as drafters may quantise or hold their draft."""
    return tuple(copy.deepcopy(m) for m in _models())


@cache
def exact_distribution(temperature: float, top_p: float, prompt: tuple[int, ...], new: int = NEW) -> torch.Tensor:
    """The target's joint distribution of its first ``new`` tokens after ``prompt``, shape (V,) * new."""
    target, _ = _models()
    joint, prefixes = torch.ones((), dtype=torch.float64), [()]
    with torch.no_grad():
        for _ in range(new):
            rows = torch.cat([target_probs(target(torch.tensor([[*prompt, *p]])).logits[0, -1:], temperature, top_p)
                              for p in prefixes]).double()
            joint = joint[..., None] * rows.view(*joint.shape, V)
            prefixes = [(*p, t) for p in prefixes for t in range(V)]
    return joint


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's test, cells expected below 5 pooled into one."""
    counts, probs = counts.flatten().double(), probs.flatten().double()
    expected = probs * counts.sum()
    assert counts[expected == 0].sum() == 0, "drew tokens the target gives probability 0"
    small = expected < 5
    obs = torch.cat((counts[~small], counts[small].sum().view(1)))
    exp = torch.cat((expected[~small], expected[small].sum().view(1)))
    keep = exp > 0
    stat = ((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64), stat / 2))


class Forwarding(WrappedDrafter):
    """A wrapper whose inner drafter's other attributes (the hooks the engine looks for: features,
    logits, graphs) stay visible."""

    def __getattr__(self, name):  # only for names the wrapper does not define
        return getattr(self.inner, name)


class FirstStepRecorder(Forwarding):
    """Watches each answer's first step: how deep it drafted, how many drafts it kept, and at which
    depths it rejected a node whose parent was kept (or was the root): under a kept path of length L
    a node at depth L + 1 was rejected (all children of the path's end, if it has any), and a kept
    node that is a later sibling means its earlier siblings were rejected (children are tried in
    order)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.first, self.tree = True, None
        self.depths: list[int] = []  # per answer: the deepest drafted token
        self.kept: list[int] = []  # drafts kept
        self.rejected_at: list[set[int]] = []  # depths with a rejected node under a kept parent

    def clear(self):
        self.depths, self.kept, self.rejected_at = [], [], []

    def reset(self, prompt_ids):
        self.first = True
        self.inner.reset(prompt_ids)

    def propose(self, context, max_depth=None, generator=None):
        tree = self.inner.propose(context, max_depth, generator)
        if self.first:
            self.tree = tree
            self.depths.append(max(depths(tree.parents.tolist()), default=0))
        return tree

    def accepted(self, context, num_new, num_drafted):
        if self.first:
            self.first = False
            self.kept.append(num_drafted)
            tokens, kids = self.tree.tokens.tolist(), children_lists(self.tree.parents.tolist())
            rejected, node = set(), -1
            for depth, token in enumerate(context[len(context) - num_new:][:num_drafted].tolist(), 1):
                child = next(i for i in kids[node] if tokens[i] == token)  # siblings' tokens differ
                if kids[node].index(child) > 0:
                    rejected.add(depth)
                node = child
            if kids[node]:
                rejected.add(num_drafted + 1)
            self.rejected_at.append(rejected)
        self.inner.accepted(context, num_new, num_drafted)


@dataclass
class Draws:
    counts: torch.Tensor  # (V,) * new: the first ``new`` tokens
    recorder: FirstStepRecorder
    p_values: dict = field(default_factory=dict)  # of the first token's test, the first two's, ...

    def share(self, values) -> float:
        return sum(values) / len(values)

    def summary(self) -> str:
        rec, deepest = self.recorder, self.counts.dim() - 1
        rejected = {d: round(self.share([d in r for r in rec.rejected_at]), 2) for d in range(1, deepest + 1)}
        return (f"first steps keeping {deepest} drafts {self.share([k == deepest for k in rec.kept]):.2f}, none "
                f"{self.share([k == 0 for k in rec.kept]):.2f}, rejecting a node under a kept parent at depth "
                f"{rejected}; p-values {self.p_values}")


OUTCOMES = ("first", "pair", "triple", "four")


def draw(target, drafter, temperature: float = 1.0, top_p: float = 1.0, prompt=PROMPT, draws: int = DRAWS,
         warmup: int = 5, new: int = NEW, **engine_kw) -> Draws:
    """``draws`` answers of ``new`` tokens (after ``warmup`` answers that are not counted: a warm
    drafter's state), compared with the target's exact distribution: the first token's, the first
    two's, ..., all ``new``'s."""
    recorder = FirstStepRecorder(drafter)
    engine = SpeculativeEngine(target, recorder, temperature, top_p, generator=torch.Generator().manual_seed(0),
                               **engine_kw)
    counts = torch.zeros((V,) * new)
    with one_thread():
        for _ in range(warmup):
            engine.generate(prompt, new, set())
        recorder.clear()
        for _ in range(draws):
            counts[tuple(engine.generate(prompt, new, set()).token_ids)] += 1
    exact = exact_distribution(temperature, top_p, tuple(prompt), new)
    result = Draws(counts, recorder)
    for length in range(1, new + 1):
        later = tuple(range(length, new))  # the tokens after the first ``length``, summed out
        result.p_values[OUTCOMES[length - 1]] = chi_square_p_value(counts.sum(later) if later else counts,
                                                                   exact.sum(later) if later else exact)
    return result


def assert_deep_drafts_keep_the_target_distribution(result: Draws) -> None:
    """Every first step drafted ``new - 1`` deep; first steps kept all of it, and none of it, and a
    node under a kept parent was rejected at every depth; and every chi-square test passes."""
    rec, deepest = result.recorder, result.counts.dim() - 1
    assert min(rec.depths) >= deepest, f"every first step drafts {deepest} tokens deep"
    assert result.share([k == deepest for k in rec.kept]) > 0.05, "first steps keep every draft: " + result.summary()
    assert result.share([k == 0 for k in rec.kept]) > 0.02, "depth-1 drafts are rejected: " + result.summary()
    for depth in range(2, deepest + 1):
        assert result.share([depth in r for r in rec.rejected_at]) > 0.02, \
            f"depth-{depth} drafts under a kept parent are rejected: " + result.summary()
    assert min(result.p_values.values()) > ALPHA / len(result.p_values), result.summary()


# ---------------------------------------------------------------- the drafters

def eagle_head(target) -> EagleHead:
    return noisy(EagleHead.for_target(target, "tiny"), 0.3, 6)


def with_exit_adapters(target, draft):
    """``draft`` with noisy exit adapters at exits 1 and 2 (copies of the target's last layer)."""
    attach_exit_adapters(draft, noisy(new_exit_adapters(target.model.layers, [1, 2]), 0.3, 9))
    draft.config.sd2 = DraftSpec([1, 2], [0.6, 0.0], exit_adapters=True).to_config()
    return draft


def draft_heads(kind: str, target, draft_vocab=None) -> DraftHeads:
    """Two heads, noisier than the other drafts: started from the target's own LM head, their top
    two tokens would hold nearly all of p and depth-2 drafts would seldom be rejected."""
    return noisy(DraftHeads.for_target(kind, target, 2, draft_vocab=draft_vocab), 0.7, 7)


SD2 = dict(exits=[1, 2], thresholds=[0.6, 0.0], temperature=1.0)
TREE = dict(total_token=7, top_k=2)  # 6 nodes: 2 at depth 1, 4 at depth 2
RECYCLING_TREE = ((0,), (1,), (0, 0), (0, 1), (1, 0))
MEDUSA_RANKS = ((0.6, 0.3), (0.6, 0.3))
INT8_STATIC = dict(int8_weights=True, passes="static", draft_vocab=DRAFT_VOCAB)


@dataclass(frozen=True)
class Case:
    make: object  # (target, draft) -> drafter
    temperature: float = 1.0
    top_p: float = 1.0
    prompt: tuple = tuple(PROMPT)
    slow: bool = True
    target_passes: str = "eager"
    new: int = NEW  # tokens generated: the first step drafts new - 1 deep
    draws: int = DRAWS


CASES = {
    # a chain sampled from q, which the acceptance test gets
    "sd2_chain": Case(lambda t, d: SD2Drafter(d, **SD2)),
    "sd2_chain_t0.9_top_p": Case(lambda t, d: SD2Drafter(d, **{**SD2, "temperature": 0.9}, top_p=0.9), 0.9, 0.9),
    # the sampled chain with prompt lookup's branch: where the branch shares the drawn first node its
    # second token is a one-hot sibling of the drawn second, else a one-hot sibling of the first
    "sd2_chain_lookup": Case(lambda t, d: SD2Drafter(d, **SD2, lookup_tokens=3), prompt=tuple(REPEATING), slow=False),
    # lookup-first: a round whose lookup finds a continuation verifies it alone (a one-hot chain)
    "sd2_chain_lookup_first": Case(lambda t, d: SD2Drafter(d, **SD2, lookup_tokens=3, lookup_first=True),
                                   prompt=tuple(REPEATING)),
    # a top-k tree (one-hot q) with the lookup branch merged in
    "sd2_tree_lookup": Case(lambda t, d: SD2Drafter(d, **SD2, tree=True, depth=2, **TREE, lookup_tokens=3),
                            prompt=tuple(REPEATING)),
    # the reduced draft vocabulary (q is 0 outside it: the residual keeps the target's other tokens),
    # int8 draft weights (bfloat16 activations) and fixed-shape passes, draft and target
    "sd2_chain_reduced_int8_static": Case(lambda t, d: SD2Drafter(d.to(torch.bfloat16), **SD2, **INT8_STATIC),
                                          target_passes="static"),
    # a draft whose exits each run their own adapter layer (q is the adapted exit's)
    "sd2_chain_exit_adapters": Case(lambda t, d: SD2Drafter(with_exit_adapters(t, d), **SD2)),
    "sps": Case(lambda t, d: SpeculativeSamplingDrafter(d, V, temperature=1.0, num_draft_tokens=3)),
    # EAGLE-2's tree from a head close to the target: both depth-2 siblings often carry much of p,
    # where a residual left unnormalised after the first one's rejection shows most
    "eagle2": Case(lambda t, d: EagleDrafter(eagle_head(t), "dynamic", depth=1, **TREE), slow=False),
    # EAGLE-2 with EAGLE's reduced head (the draft vocabulary's rows of the LM head), at fixed shapes
    "eagle2_reduced_static": Case(lambda t, d: EagleDrafter(eagle_head(t), "dynamic", depth=1, **TREE,
                                                            draft_vocab=DRAFT_VOCAB, passes="static"),
                                  target_passes="static"),
    "eagle3": Case(lambda t, d: Eagle3Drafter(noisy(Eagle3Head.for_target(t, DRAFT_VOCAB, (1, 2, 3)), 0.3, 8),
                                              depth=1, **TREE), top_p=0.8),
    # Medusa's sparse tree for these rank accuracies: both top-2 tokens, each with its top-2 children
    "medusa": Case(lambda t, d: HeadsDrafter(draft_heads("medusa", t), "static", total_token=7,
                                             rank_accuracy=MEDUSA_RANKS)),
    "hydra": Case(lambda t, d: HeadsDrafter(draft_heads("hydra", t), "dynamic", **TREE)),
    # a warm matrix (kept across answers), so that every first step drafts the template
    "recycling": Case(lambda t, d: RecyclingDrafter(V, k=2, template=RECYCLING_TREE, warm=True), top_p=0.8),
    "samd": Case(lambda t, d: SamdDrafter(8), prompt=tuple(REPEATING)),
    # the lookup methods: one-hot chains and trees from the prompt, n-gram pools and a datastore
    "pld": Case(lambda t, d: PromptLookupDrafter(max_ngram_size=2, num_pred_tokens=4), prompt=tuple(REPEATING)),
    "lookahead": Case(lambda t, d: LookaheadDrafter(level=3, window=2, guess=2), prompt=tuple(REPEATING)),
    "rest": Case(lambda t, d: RestDrafter(rest_datastore(), num_draft=8, max_token_span=3, min_token_span=1),
                 prompt=tuple(REPEATING)),
    # three deep (4 tokens generated; the first four tokens' joint tested), with more draws: a q wrong
    # at depth 3 biases the third token where the target's probabilities are small, cells that 1,500
    # draws pool (the control below: triple p = 0.34 at 1,500 draws, 6e-28 at 4,000)
    "sd2_chain_3deep": Case(lambda t, d: SD2Drafter(d, **SD2), new=4, draws=DEEP_DRAWS, slow=False),
    "sd2_tree_lookup_3deep": Case(lambda t, d: SD2Drafter(d, **SD2, tree=True, depth=3, total_token=9, top_k=2,
                                                          lookup_tokens=3),
                                  prompt=tuple(REPEATING), new=4, draws=DEEP_DRAWS),
    "sps_3deep": Case(lambda t, d: SpeculativeSamplingDrafter(d, V, temperature=1.0, num_draft_tokens=4),
                      new=4, draws=DEEP_DRAWS),
    "eagle2_3deep": Case(lambda t, d: EagleDrafter(eagle_head(t), "dynamic", depth=2, total_token=9, top_k=2),
                         new=4, draws=DEEP_DRAWS),
    "medusa_3deep": Case(lambda t, d: HeadsDrafter(noisy(DraftHeads.for_target("medusa", t, 3), 0.7, 7), "static",
                                                   total_token=9, rank_accuracy=MEDUSA_RANKS + ((0.6, 0.3),)),
                         new=4, draws=DEEP_DRAWS),
}


@cache
def rest_datastore() -> Datastore:
    """Continuations of REPEATING's last tokens (2, 0, 1) that branch: 2 (its lookup continuation), 3, 4."""
    docs = [[2, 0, 1, 2, 0], [2, 0, 1, 2, 1], [2, 0, 1, 3, 4], [2, 0, 1, 4, 0], [0, 1, 2, 4]]
    return Datastore.build(docs, vocab_size=V, sort_depth=4, progress=False)


def draw_case(name: str, wrap=lambda drafter: drafter) -> Draws:
    case = CASES[name]
    target, draft = models()
    return draw(target, wrap(case.make(target, draft)), case.temperature, case.top_p, case.prompt,
                draws=case.draws, new=case.new, target_passes=case.target_passes)


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if c.slow else [])
                                  for n, c in CASES.items()])
def test_sampling_over_two_deep_drafts_keeps_the_target_distribution(name):
    assert_deep_drafts_keep_the_target_distribution(draw_case(name))


# ---------------------------------------------------------------- the test fails broken drafters

class ReportsTheParentsRow(Forwarding):
    """Broken: a drawn node below depth 1 reports its parent's q row instead of the row it was drawn
    from (one-hot rows, of nodes not drawn, stay)."""

    def propose(self, context, max_depth=None, generator=None):
        tree = self.inner.propose(context, max_depth, generator)
        if tree.draft_probs is None:
            return tree
        probs = tree.draft_probs.clone()
        for node, parent in enumerate(tree.parents.tolist()):
            if parent >= 0 and probs[node].max() < 1:
                probs[node] = tree.draft_probs[parent]
        return DraftTree(tree.tokens, tree.parents, probs)


class FreeBranchReportsTheDrawnRow(Forwarding):
    """Broken: a free branch's node (one-hot q, as it was not drawn) reports the q row of the last
    node drawn, as if drawn from it."""

    def propose(self, context, max_depth=None, generator=None):
        tree = self.inner.propose(context, max_depth, generator)
        drawn = self.inner.round.drafted_nodes
        if tree.draft_probs is None or not 0 < drawn < len(tree):
            return tree
        probs = tree.draft_probs.clone()
        probs[drawn:] = probs[drawn - 1]
        return DraftTree(tree.tokens, tree.parents, probs)


class ReportsTheParentsRowAtDepth3(Forwarding):
    """Broken only three deep: a drawn depth-3 node reports its depth-2 parent's q row."""

    def propose(self, context, max_depth=None, generator=None):
        tree = self.inner.propose(context, max_depth, generator)
        probs, node_depths = tree.draft_probs.clone(), depths(tree.parents.tolist())
        for node, parent in enumerate(tree.parents.tolist()):
            if node_depths[node] == 3 and probs[node].max() < 1:
                probs[node] = tree.draft_probs[parent]
        return DraftTree(tree.tokens, tree.parents, probs)


def test_the_four_token_test_fails_a_wrong_q_three_deep():
    """The control of the three-deep cases: the SD2 chain's case (4,000 draws) with q wrong at depth 3
    only."""
    result = draw_case("sd2_chain_3deep", ReportsTheParentsRowAtDepth3)
    assert min(result.p_values.values()) < ALPHA / 4 / 1000, result.summary()


@pytest.mark.parametrize("broken", [ReportsTheParentsRow,
                                    pytest.param(FreeBranchReportsTheDrawnRow, marks=pytest.mark.slow)])
def test_the_test_fails_a_drafter_reporting_the_wrong_q(broken):
    """The fast control of the test above: the same case, draws and tests, with q wrong at depth 2."""
    result = draw_case("sd2_chain_lookup", broken)
    assert min(result.p_values.values()) < ALPHA / 3 / 1000, result.summary()


# ---------------------------------------------------------------- q's support, cheaply

class ChecksEveryProposal(Forwarding):
    def __init__(self, inner, vocab):
        super().__init__(inner)
        self.outside = torch.ones(V, dtype=torch.bool)
        self.outside[vocab] = False
        self.nodes = 0

    def propose(self, context, max_depth=None, generator=None):
        tree = self.inner.propose(context, max_depth, generator)
        q = tree.draft_probs
        if q is None:  # deterministic proposals: q is one-hot at the token
            q = torch.nn.functional.one_hot(tree.tokens, V).float()
        rows = torch.arange(len(tree))
        assert (q[rows, tree.tokens] > 0).all(), "a drafted token with q = 0"
        assert (q[:, self.outside] == 0).all(), "q has mass outside the draft vocabulary"
        torch.testing.assert_close(q.sum(-1).float(), torch.ones(len(tree)))
        self.nodes += len(tree)
        return tree


PROPERTY_CASES = {  # the reduced draft vocabulary, int8 draft weights and fixed-shape passes
    "sd2_chain": lambda t, d: SD2Drafter(d.to(torch.bfloat16), **{**SD2, "top_p": 0.8}, **INT8_STATIC),
    "sd2_tree": lambda t, d: SD2Drafter(d.to(torch.bfloat16), **SD2, tree=True, depth=2, **TREE, **INT8_STATIC),
    "eagle2": lambda t, d: EagleDrafter(eagle_head(t), "dynamic", depth=1, **TREE, draft_vocab=DRAFT_VOCAB,
                                        passes="static"),
    "eagle3": CASES["eagle3"].make,
    "medusa": lambda t, d: HeadsDrafter(draft_heads("medusa", t, DRAFT_VOCAB), "static", total_token=7,
                                        rank_accuracy=MEDUSA_RANKS),
    "hydra": lambda t, d: HeadsDrafter(draft_heads("hydra", t, DRAFT_VOCAB), "dynamic", **TREE),
}


@pytest.mark.parametrize("name", PROPERTY_CASES)
def test_every_drafted_token_has_q_above_0_inside_the_draft_vocabulary(name):
    target, draft = models()
    drafter = ChecksEveryProposal(PROPERTY_CASES[name](target, draft), DRAFT_VOCAB)
    engine = SpeculativeEngine(target, drafter, 1.0, 0.8, generator=torch.Generator().manual_seed(0),
                               target_passes="static")
    with one_thread():
        for _ in range(10):
            engine.generate(PROMPT, 12, set())
    assert drafter.nodes > 100
