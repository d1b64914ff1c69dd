"""SD2 drafter on a tiny random Llama: lossless greedy output (chain and tree, every exit mix),
exact deferred KV, adaptive draft length, reduced head, automatic tree size, input checks."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sd2train.exits import all_exit_logits
from specdec.drafters.pld import prompt_lookup
from specdec.drafters.sd2 import SD2Drafter
from specdec.drafters.sorted_draft import SortedDraft
from specdec.tree.proposal import Proposal
from specdec.engine import SpeculativeEngine
from specdec.llama import LlamaRunner, causal_mask
from specdec.verify import target_probs

from helpers import PROMPT, greedy_gaps, varied_llama

EXITS = [1, 2, 4]
MIXED = [0.3, 0.5, 0.0]  # on this model every exit gets used


def generate(target, **kw):
    drafter = SD2Drafter(copy.deepcopy(target), exits=EXITS, **kw)
    return drafter, SpeculativeEngine(target, drafter).generate(PROMPT, 40, set())


@pytest.mark.parametrize("tree", [False, True], ids=["chain", "tree"])
@pytest.mark.parametrize("thresholds", [[0.0, 0.0, 0.0], MIXED, [0.99, 0.99, 0.0]], ids=["exit1", "mixed", "exit4"])
def test_greedy_output_equals_ar(target, ar_tokens, tree, thresholds):
    _, out = generate(target, thresholds=thresholds, tree=tree, total_token=30, depth=3, top_k=4)
    assert out.token_ids == ar_tokens[:40]
    assert sum(out.accept_lengths) == 40 and out.decoding_steps == len(out.accept_lengths)
    # every step adds one target token, except a last step cut short by max_new_tokens (all drafts)
    assert 0 <= sum(out.stats["exit_accepted"].values()) - (40 - out.decoding_steps) <= 1
    if thresholds is MIXED:
        assert all(out.stats["exit_tokens"][e] > 0 for e in EXITS), out.stats


@pytest.mark.parametrize("tree", [False, True], ids=["chain", "tree"])
def test_deferred_kv_equals_a_fresh_forward(target, tree):
    """Every row each layer holds after mixed exits, deferrals and compactions equals what a
    single full forward over the accepted tokens computes."""
    # A tree level leaves early only when all its rows are sure: lower thresholds keep exits mixed.
    drafter, out = generate(target, thresholds=[0.1, 0.2, 0.0] if tree else MIXED, tree=tree, total_token=30,
                            depth=3, top_k=4)
    draft = drafter.draft
    c = draft.context_rows
    draft.keep_rows([], c)  # drop the last round's unverified draft rows
    context = PROMPT + out.token_ids
    assert draft.tok[:c].tolist() == context[:c]
    lengths = draft.cache.lengths
    assert lengths[0] == c and lengths[-1] < c, lengths  # the deepest group really lags behind
    fresh_runner = LlamaRunner(drafter.runner.model)
    fresh = fresh_runner.new_cache(c)
    with torch.inference_mode():
        fresh_runner.forward(torch.tensor(context[:c]), fresh, torch.arange(c), causal_mask(c, 0, "cpu"), logits=False)
    for layer, n in enumerate(lengths):
        torch.testing.assert_close(draft.cache.k[layer, :, :n], fresh.k[layer, :, :n], atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(draft.cache.v[layer, :, :n], fresh.v[layer, :, :n], atol=1e-4, rtol=1e-3)


def test_chain_draft_length_adapts(target):
    """An exact draft (the target itself at the last exit) is always accepted: 5, 7, 9, ... tokens."""
    _, out = generate(target, thresholds=[0.99, 0.99, 0.0])
    assert out.accept_lengths[:4] == [6, 8, 10, 12]


def test_tree_with_an_exact_draft_reaches_full_depth(target):
    _, out = generate(target, thresholds=[0.99, 0.99, 0.0], tree=True, total_token=60, depth=3, top_k=4)
    assert max(out.accept_lengths) == 5  # depth + 1 drafted levels + the bonus token
    assert sum(out.accept_lengths) / out.decoding_steps > 4


def test_reduced_draft_vocabulary_is_lossless_and_only_proposes_its_tokens(target, ar_tokens):
    vocab = list(range(0, 64, 2))
    drafter = SD2Drafter(copy.deepcopy(target), exits=EXITS, thresholds=MIXED, tree=True, total_token=20,
                         depth=3, top_k=4, draft_vocab=vocab)
    engine = SpeculativeEngine(target, drafter)
    drafter.reset(torch.tensor(PROMPT))
    proposal = drafter.propose(torch.tensor(PROMPT))
    assert set(proposal.tokens.tolist()) <= set(vocab)
    assert engine.generate(PROMPT, 40, set()).token_ids == ar_tokens[:40]


@pytest.mark.parametrize("tree", [False, True], ids=["chain", "tree"])
def test_a_bfloat16_draft_under_a_float32_target_is_lossless(target, ar_tokens, tree):
    """The draft may run in a cheaper dtype: the target still verifies in float32."""
    drafter = SD2Drafter(copy.deepcopy(target).bfloat16(), exits=EXITS, thresholds=[0.99, 0.99, 0.0], tree=tree,
                         total_token=20, depth=3, top_k=4)
    out = SpeculativeEngine(target, drafter).generate(PROMPT, 40, set())
    assert drafter.runner.dtype == torch.bfloat16 and out.token_ids == ar_tokens[:40]
    assert sum(out.accept_lengths) / out.decoding_steps > 2  # exit 4 is a bf16 copy of the target: it mostly agrees


@pytest.mark.parametrize("tree", [False, True], ids=["chain", "tree"])
def test_an_int8_draft_under_a_float32_target_is_lossless(target, ar_tokens, tree):
    """Weight-only int8 draft layers and head (bfloat16 activations): cheaper drafts, same output."""
    drafter = SD2Drafter(copy.deepcopy(target).bfloat16(), exits=EXITS, thresholds=MIXED, tree=tree,
                         total_token=20, depth=3, top_k=4, draft_vocab=list(range(0, 64, 2)), int8_weights=True)
    assert len(drafter.runner.int8) == 1 + 7 * 4  # the full head and every projection of every layer
    out = SpeculativeEngine(target, drafter).generate(PROMPT, 40, set())
    assert out.token_ids == ar_tokens[:40]
    assert out.stats["exit_accepted"] and sum(out.stats["exit_accepted"].values()) > 0


def test_int8_linear_is_close_to_the_float_weights_and_needs_bfloat16():
    from specdec.llama import Int8Linear

    torch.manual_seed(0)
    weight, bias, x = torch.randn(48, 32), torch.randn(48), torch.randn(3, 5, 32)
    quantized = Int8Linear(weight, bias)
    assert quantized.weight.dtype == torch.int8 and quantized.out_features == 48
    # Per-row scales: every weight is within one quantisation step of its original (half a step of
    # rounding, and the kernel's bfloat16 scale is off by at most 127 x 2^-9 of a step).
    step = weight.abs().amax(1, keepdim=True) / 127
    assert ((quantized.dequantized() - weight).abs() <= step).all()
    y = quantized(x)
    assert y.shape == (3, 5, 48) and y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), x @ quantized.dequantized().T + bias, atol=0.15, rtol=0.02)
    with pytest.raises(ValueError, match="bfloat16 activations"):
        LlamaRunner(varied_llama()).quantize_int8()


def test_verification_is_timed_for_every_size():
    costs = SpeculativeEngine(varied_llama()).time_verification([1, 2, 4, 8, 16, 32])
    assert set(costs) == {1, 2, 4, 8, 16, 32} and all(0 < t < 1 for t in costs.values())


@pytest.mark.parametrize("costs, size", [
    ({n: 0.1 for n in (1, 2, 4, 8, 16, 32)}, 31),  # verifying is equally dear at every size: the biggest tree
    ({1: 0.1, 2: 0.1, 4: 0.1, 8: 0.1, 16: 1.0, 32: 1.0}, 7),  # past 8 tokens 10x dearer: 7 nodes + the root
])
def test_auto_tree_size_follows_the_verification_costs(target, ar_tokens, costs, size):
    """An exact draft (the target at the deepest exit) is sure of its tree, so the size that
    maximises tokens per second is set by the costs alone."""
    _, out = generate(target, thresholds=[0.99, 0.99, 0.0], tree=True, total_token="auto", depth=3, top_k=4,
                      verify_costs=costs)
    assert out.token_ids == ar_tokens[:40]
    assert out.stats["mean_draft_size"] == size
    assert out.stats["verify_costs_ms"] == {n: round(1000 * t, 2) for n, t in costs.items()}  # what it came from


def test_auto_mode_skips_drafting_that_does_not_pay_and_stays_lossless(target, ar_tokens):
    """Verification costs are given, not timed: 0.1 s a pass, so the draft's own few ms decide
    nothing and only acceptance does."""
    costs = {n: 0.1 for n in (1, 2, 4, 8, 16, 32)}
    useless = varied_llama(seed=7)  # another random model: it (almost) never agrees with the target
    drafter = SD2Drafter(useless, exits=EXITS, thresholds=MIXED, tree=True, total_token="auto", depth=3, top_k=4,
                         verify_costs=costs)
    out = SpeculativeEngine(target, drafter).generate(PROMPT, 40, set())
    assert out.token_ids == ar_tokens[:40]
    assert out.stats["skipped_rounds"] >= out.decoding_steps // 2, out.stats  # mostly plain target steps
    _, exact = generate(target, thresholds=[0.99, 0.99, 0.0], tree=True, total_token="auto", depth=3, top_k=4,
                        verify_costs=costs)
    assert exact.token_ids == ar_tokens[:40] and exact.stats["skipped_rounds"] == 0


def test_a_sampled_chain_reports_the_distribution_its_exit_drew_from(target):
    draft = copy.deepcopy(target)
    drafter = SD2Drafter(draft, exits=EXITS, thresholds=MIXED, temperature=0.8, top_p=0.9)
    drafter.reset(torch.tensor(PROMPT))
    proposal = drafter.propose(torch.tensor(PROMPT))
    # the first token's q: the draft's own forward to the exit it drafted at, at T = 0.8, top-p 0.9
    exit_ = drafter.round.exits[0]
    with torch.no_grad():
        logits = all_exit_logits(draft, [exit_], torch.tensor([PROMPT]))[exit_][0, -1]
    expected = target_probs(logits[None], 0.8, 0.9)[0]
    torch.testing.assert_close(proposal.draft_probs[0], expected, atol=1e-5, rtol=1e-4)
    assert (expected > 0).sum() < 64 and expected[proposal.tokens[0]] > 0  # the nucleus, and the token is in it
    engine = SpeculativeEngine(target, drafter, temperature=0.8, generator=torch.Generator().manual_seed(0))
    out = engine.generate(PROMPT, 30, set())
    assert out.new_tokens == 30 == sum(out.accept_lengths)


@pytest.mark.parametrize("exits, thresholds, message", [
    ([2, 1, 4], [0.5, 0.5, 0.0], "strictly increasing"),
    ([1, 2, 6], [0.5, 0.5, 0.0], "deeper than the draft"),
    ([1, 2, 4], [0.5, 0.0], "2 thresholds for 3 exits"),
    ([1, 2, 4], [0.5, 0.5, 0.2], "last threshold must be 0"),
])
def test_bad_exits_are_rejected(target, exits, thresholds, message):
    with pytest.raises(ValueError, match=message):
        SD2Drafter(copy.deepcopy(target), exits=exits, thresholds=thresholds)


def test_exits_default_to_the_checkpoint_config(target):
    draft = copy.deepcopy(target)
    draft.config.sd2 = {"exits": [2, 4], "thresholds": [0.4, 0.0]}
    drafter = SD2Drafter(draft)
    assert drafter.exits == [2, 4] and drafter.thresholds == [0.4, 0.0]
    assert [list(g) for g in drafter.draft.groups] == [[0, 1], [2, 3]]


def test_a_tree_level_leaves_at_an_exit_only_when_every_row_is_confident(target):
    """One confident row must not send a whole level to the shallow exit."""
    sure, unsure = torch.full((64,), -10.0), torch.zeros(64)
    sure[3] = 10.0  # p(top-1) ~ 1 against 1/64 for the flat row
    rows_at_group = {0: [sure, unsure], 1: [sure, sure], 2: [unsure, unsure]}

    class TwoRowLevel(SortedDraft):  # each group's exit gives the two rows above as logits
        def advance(self, g, upto):
            return torch.stack(rows_at_group[g])[None]

        def logits(self, h):
            return h[0]

    draft = TwoRowLevel(LlamaRunner(copy.deepcopy(target)), EXITS, [0.5, 0.5, 0.0], branching=True)
    assert draft.cascade(upto=2, last=2)[1] == EXITS[1]
    rows_at_group[0] = [sure, sure]
    assert draft.cascade(upto=2, last=2)[1] == EXITS[0]
    rows_at_group[0] = rows_at_group[1] = [unsure, sure]
    assert draft.cascade(upto=2, last=2)[1] == EXITS[2]  # the last exit always drafts


@pytest.mark.parametrize("tree", [False, True], ids=["chain", "tree"])
def test_a_lookup_branch_is_lossless_and_used(target, tree):
    prompt = PROMPT * 3  # repeated n-grams for prompt lookup to find
    ar = SpeculativeEngine(target).generate(prompt, 40, set()).token_ids
    drafter = SD2Drafter(copy.deepcopy(target), exits=EXITS, thresholds=MIXED, tree=tree, total_token=12, depth=3,
                         top_k=3, lookup_tokens=6)
    out = SpeculativeEngine(target, drafter).generate(prompt, 40, set())
    assert out.token_ids == ar
    assert out.stats["lookup_tokens"] > 0 and out.stats["lookup_accepted"] <= out.stats["lookup_tokens"]
    drafted = sum(out.stats["exit_accepted"].values()) + out.stats["lookup_accepted"]
    assert 0 <= drafted - (40 - out.decoding_steps) <= 1  # as in test_greedy_output_equals_ar


def test_the_lookup_branch_shares_the_drafts_nodes_where_they_agree():
    # The draft proposed 7 then 9; lookup finds (5, 6) earlier, followed by 7, 8, 5, 6.
    drafted = Proposal(tokens=[7, 9], parents=[-1, 0], rows=[10, -1], exits=[1, 2])
    found = prompt_lookup(np.array([5, 6, 7, 8, 5, 6]), 1, 3, 4)
    proposal, added = drafted.with_branch(found.tolist())
    tree = proposal.as_tree("cpu")
    assert tree.tokens.tolist() == [7, 9, 8, 5, 6] and tree.parents.tolist() == [-1, 0, 0, 2, 3]
    assert proposal.rows == [10, -1, -1, -1, -1] and proposal.exits == [1, 2, None, None, None]
    assert proposal.drafted_nodes == 2 and added == 3
    assert proposal.accepted_path([7, 8, 5]) == [0, 2, 3]
    # A round the draft sat out: every node is lookup's.
    copied, added = Proposal.empty().with_branch([4, 4])
    assert copied.drafted_nodes == 0 and added == 2 and copied.parents == [-1, 0]


@pytest.mark.parametrize("tree", [False, True], ids=["chain", "tree"])
def test_a_bfloat16_target_emits_only_near_greedy_tokens(tree):
    """In bfloat16 near-ties may flip (batched and one-token passes round differently): the output
    need not equal AR's, but every token is the float32 argmax or within rounding of it."""
    target = varied_llama().bfloat16()
    drafter = SD2Drafter(copy.deepcopy(target), exits=EXITS, thresholds=MIXED, tree=tree, total_token=20, depth=3,
                         top_k=4)
    out = SpeculativeEngine(target, drafter).generate(PROMPT, 40, set())
    gaps = greedy_gaps(target, PROMPT, out.token_ids)
    assert max(gaps) < 0.3 and sum(g == 0 for g in gaps) >= 36, gaps


@pytest.mark.parametrize("tree", [False, True], ids=["chain", "tree"])
@pytest.mark.parametrize("min_ngram", [1, 2])
def test_lookup_first_copies_where_it_can_and_drafts_elsewhere(target, tree, min_ngram):
    prompt = PROMPT * 3  # repeated n-grams: prompt lookup finds continuations
    ar = SpeculativeEngine(target).generate(prompt, 40, set()).token_ids
    drafter = SD2Drafter(copy.deepcopy(target), exits=EXITS, thresholds=MIXED, tree=tree, total_token=12, depth=3,
                         top_k=3, lookup_tokens=6, lookup_first=True, lookup_first_min_ngram=min_ngram)
    out = SpeculativeEngine(target, drafter).generate(prompt, 40, set())
    assert out.token_ids == ar
    stats = out.stats
    assert 0 < stats["lookup_rounds"] < out.decoding_steps  # some rounds copied, the others drafted
    assert sum(stats["exit_tokens"].values()) > 0 and stats["lookup_tokens"] > 0
    with pytest.raises(ValueError, match="lookup_first needs lookup_tokens"):
        SD2Drafter(copy.deepcopy(target), exits=EXITS, thresholds=MIXED, lookup_first=True)


@pytest.mark.parametrize("tree", [False, True], ids=["chain", "tree"])
def test_lookup_first_waits_for_a_long_enough_match(target, tree):
    drafter = SD2Drafter(copy.deepcopy(target), exits=EXITS, thresholds=MIXED, tree=tree, total_token=6, depth=2,
                         top_k=2, lookup_tokens=4, lookup_first=True, lookup_first_min_ngram=2)
    only_a_1gram = torch.tensor([5, 9, 3, 5])  # "5" was seen before, "3 5" was not
    drafter.reset(only_a_1gram)
    tree_ = drafter.propose(only_a_1gram)
    assert drafter.drafted_this_round and drafter.counts["lookup_rounds"] == 0
    assert 9 in tree_.tokens.tolist()  # what followed the earlier "5" joined the draft's tree
    a_2gram = torch.tensor([5, 9, 3, 5, 9])  # "5 9" was seen before, followed by 3
    drafter.reset(a_2gram)
    tree_ = drafter.propose(a_2gram)
    assert not drafter.drafted_this_round and drafter.counts["lookup_rounds"] == 1
    assert tree_.tokens.tolist() == [3, 5, 9]
    with pytest.raises(ValueError, match="lookup_first_min_ngram must be within"):
        SD2Drafter(copy.deepcopy(target), exits=EXITS, thresholds=MIXED, lookup_tokens=4, lookup_first=True,
                   lookup_first_min_ngram=4)
    with pytest.raises(ValueError, match="lookup_first_min_ngram needs lookup_first"):
        SD2Drafter(copy.deepcopy(target), exits=EXITS, thresholds=MIXED, lookup_tokens=4, lookup_first_min_ngram=2)


def test_the_auto_budget_backs_off_while_drafting_does_not_pay_and_recovers():
    from specdec.tree.budget import AutoTreeBudget, FixedTreeBudget

    budget = AutoTreeBudget({1: 0.02, 4: 0.02, 8: 0.04}, timing_seconds=1.5)
    # Rounds whose drafted nodes are all rejected yield 1 token per (draft + verify) time, less
    # than a plain 20 ms step: skip 1, 2, 4 rounds, each probe failing again.
    skipped = []
    for _ in range(3):
        budget.round_done(predicted=2.0, drafted=0, draft_seconds=0.005, verified_nodes=3)
        rounds = 0
        while budget.skip_round():
            rounds += 1
        skipped.append(rounds)
    assert skipped == [1, 2, 4] and budget.calibration < 1.0
    for _ in range(6):  # rounds that keep 3 drafted tokens pay: no more skipping
        budget.round_done(predicted=3.0, drafted=3, draft_seconds=0.005, verified_nodes=3)
    assert not budget.skip_round() and budget.backoff == 1
    # Sizes are chosen from the costs: 3 sure nodes fit the 4-token pass at the 1-token price.
    assert budget.tree_size(torch.log(torch.tensor([1.0, 1.0, 1.0, 0.01, 0.01]))) == 3
    assert budget.stats() == {"verify_costs_ms": {1: 20.0, 4: 20.0, 8: 40.0}, "verify_timing_seconds": 1.5}
    with pytest.raises(ValueError, match="needs the target's verification costs"):
        AutoTreeBudget({})
    with pytest.raises(ValueError, match="total_token must be >= 2"):
        FixedTreeBudget(1)
    assert FixedTreeBudget(5).tree_size(torch.zeros(10)) == 4 and not FixedTreeBudget(5).skip_round()
