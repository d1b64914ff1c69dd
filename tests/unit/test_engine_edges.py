"""The engine's edge cases, each against plain decoding: a stop token inside a multi-token accepted
run, max_new_tokens reached mid-run, the tree cut at the context limit, a draft buffer that grows
past its first allocation, and the remaining-token budget drafters are told.

An *exact* draft (the target itself as the SD2 draft, deepest exit always taken) makes every
drafted token right, so accepted runs are long and each cut lands inside one."""
from __future__ import annotations

import copy

import pytest
import torch

from specdec.drafters.pld import PromptLookupDrafter
from specdec.drafters.sd2 import SD2Drafter
from specdec.engine import SpeculativeEngine
from specdec.tree import depths

from helpers import PROMPT, WrappedDrafter, varied_llama

EXACT = dict(exits=[2, 4], thresholds=[1.0, 0.0])  # exit 2 is never sure enough: always the whole target
MODES = {"chain": dict(tree=False), "tree": dict(tree=True, total_token=20, depth=4, top_k=3)}


def exact_engine(target, mode, **engine_kw):
    drafter = SD2Drafter(copy.deepcopy(target), **EXACT, **MODES[mode])
    return SpeculativeEngine(target, drafter, **engine_kw)


@pytest.mark.parametrize("mode", MODES)
def test_a_stop_token_inside_an_accepted_run_ends_the_answer_there(target, ar_tokens, mode):
    stop = ar_tokens[9]
    first = ar_tokens.index(stop)
    out = exact_engine(target, mode).generate(PROMPT, 60, {stop})
    assert out.token_ids == ar_tokens[:first + 1]  # nothing past the stop token
    assert out.new_tokens == first + 1 == sum(out.accept_lengths)
    # the step that met it accepted drafts after the stop token too (a run really was cut)
    assert out.accept_lengths[-1] > 1 and out.accept_lengths[-1] < max(out.accept_lengths)


class IgnoresBudget(WrappedDrafter):
    """A drafter that drafts its full length whatever budget it is told: the engine must cut."""

    def propose(self, context, max_depth=None, generator=None):
        return self.inner.propose(context, generator=generator)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("max_new", [1, 2, 7, 13])
@pytest.mark.parametrize("budget", ["kept", "ignored"])
def test_max_new_tokens_reached_mid_run_gives_exactly_that_many(target, ar_tokens, mode, max_new, budget):
    engine = exact_engine(target, mode)
    if budget == "ignored":
        engine.drafter = IgnoresBudget(engine.drafter)
    out = engine.generate(PROMPT, max_new, set())
    assert out.token_ids == ar_tokens[:max_new]
    assert out.new_tokens == max_new == sum(out.accept_lengths)
    # every drafted token kept is counted at its exit, the last step's included
    kept_drafts = sum(out.stats["exit_accepted"].values())
    assert kept_drafts >= max_new - out.decoding_steps


@pytest.mark.parametrize("mode", MODES)
def test_the_tree_is_cut_at_the_context_limit(target, ar_tokens, mode):
    context = len(PROMPT) + 11  # the model's context, smaller than prompt + max_new_tokens
    out = exact_engine(target, mode, max_length=context).generate(PROMPT, 60, set())
    assert out.token_ids == ar_tokens[:11]
    assert len(PROMPT) + out.new_tokens == context


@pytest.mark.parametrize("mode", MODES)
def test_a_draft_buffer_that_grows_past_its_first_allocation_stays_lossless(mode):
    target = varied_llama(max_position_embeddings=1024)
    reference = SpeculativeEngine(target).generate(PROMPT, 600, set()).token_ids
    drafter = SD2Drafter(copy.deepcopy(target), **EXACT, **MODES[mode])
    engine = SpeculativeEngine(target, drafter)
    drafter.reset(torch.tensor(PROMPT))
    first = drafter.draft.capacity  # allocated for the prompt + 512 rows
    out = engine.generate(PROMPT, 600, set())
    assert drafter.draft.capacity > first >= len(PROMPT) + 512
    assert out.token_ids == reference and out.new_tokens == 600
    # the exact draft stays exact after the growth: its cache kept every row
    done, after = 0, []
    for n in out.accept_lengths[:-1]:
        done += n
        if done > first:
            after.append(n)
    assert after and sum(after) / len(after) > 4, after


class RecordingDrafter(WrappedDrafter):
    """Records, per step, the budget the drafter was told and the depth it drafted."""

    def __init__(self, inner):
        super().__init__(inner)
        self.calls = []

    def propose(self, context, max_depth=None, generator=None):
        tree = self.inner.propose(context, max_depth, generator)
        deepest = max(depths(tree.parents.tolist()), default=0)
        self.calls.append((len(context), max_depth, deepest))
        return tree


@pytest.mark.parametrize("make", [
    lambda t: SD2Drafter(copy.deepcopy(t), **EXACT, tree=False),
    lambda t: SD2Drafter(copy.deepcopy(t), **EXACT, tree=True, total_token=20, depth=4, top_k=3),
    lambda t: SD2Drafter(copy.deepcopy(t), **EXACT, tree=True, total_token=20, depth=4, top_k=3, lookup_tokens=8),
    lambda t: PromptLookupDrafter(num_pred_tokens=10),
], ids=["sd2-chain", "sd2-tree", "sd2-tree-lookup", "pld"])
def test_drafters_are_told_the_remaining_budget_and_keep_to_it(target, ar_tokens, make):
    drafter = RecordingDrafter(make(target))
    prompt = PROMPT + PROMPT  # a repeated n-gram: prompt lookup finds something
    reference = SpeculativeEngine(target).generate(prompt, 9, set()).token_ids
    out = SpeculativeEngine(target, drafter).generate(prompt, 9, set())
    assert out.token_ids == reference
    limit = len(prompt) + 9
    for length, max_depth, deepest in drafter.calls:
        assert max_depth == limit - length - 1 >= 1  # never asked when only the bonus token is left
        assert deepest <= max_depth
    assert any(deepest == max_depth for _, max_depth, deepest in drafter.calls)  # the budget did bind
