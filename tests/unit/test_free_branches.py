"""SD2 with free branches from prompt lookup, Token Recycling's matrix and SAM decoding's automaton:
each source's continuation against a hand-worked context, the tree a round proposes (free first
or beside the draft), lossless greedy output with each source and all together, bad settings."""
from __future__ import annotations

import copy

import pytest
import torch

from specdec.drafters.free_branches import FREE_SOURCES, FreeBranches, FreeContinuation
from specdec.drafters.sd2 import SD2Drafter
from specdec.engine import SpeculativeEngine

from helpers import PROMPT, WrappedDrafter

EXITS, MIXED = [1, 2, 4], [0.3, 0.5, 0.0]
# Prompt lookup's longest n-gram is 3 tokens: (2, 3, 4), first seen at the start, then 6, 1, 2.
# The automaton's longest match is (1, 2, 3, 4), 4 tokens, first seen at 4-7, then 8, 1, 2.
CONTEXT = torch.tensor([2, 3, 4, 6, 1, 2, 3, 4, 8, 1, 2, 3, 4])


def recycle(reader, next_of: dict[int, int], vocab: int = 64) -> None:
    """One verification pass whose rows are ``next_of``'s tokens, the target's best after each its value."""
    logits = torch.zeros(len(next_of), vocab)
    logits[range(len(next_of)), list(next_of.values())] = 1.0
    reader(torch.tensor(list(next_of)), logits)


def test_each_source_finds_its_continuation_longest_match_first():
    free = FreeBranches(FREE_SOURCES, vocab_size=64, max_len=3)
    free.reset(CONTEXT)
    recycle(free.target_logits, {4: 7, 7: 9})  # after 4 the target ranked 7 first, after 7: 9; 9: never verified
    assert free.find(CONTEXT) == [FreeContinuation("samd", [8, 1, 2], 4), FreeContinuation("lookup", [6, 1, 2], 3),
                                  FreeContinuation("recycling", [7, 9], 1)]
    assert [c.tokens for c in free.find(CONTEXT, max_len=1)] == [[8], [6], [7]]
    free.reset(CONTEXT)  # every table starts empty per sequence
    assert [c.source for c in free.find(CONTEXT)] == ["samd", "lookup"]
    assert not hasattr(FreeBranches(("lookup", "samd"), 64, 3), "target_logits")  # no logits read without recycling


def drafter_for(target, **kw):
    return SD2Drafter(copy.deepcopy(target), exits=EXITS, thresholds=MIXED, tree=True, total_token=4, depth=2,
                      top_k=2, lookup_tokens=3, free_branches=FREE_SOURCES, **kw)


def branches(tree) -> set[tuple[int, ...]]:
    """Every root-to-node token path of a draft tree."""
    tokens, parents = tree.tokens.tolist(), tree.parents.tolist()
    paths: list[tuple[int, ...]] = []
    for token, parent in zip(tokens, parents):
        paths.append((paths[parent] if parent >= 0 else ()) + (token,))
    return set(paths)


@pytest.mark.parametrize("min_match, first", [(1, ["samd", "lookup", "recycling"]), (2, ["samd", "lookup"]),
                                              (4, ["samd"])])
def test_free_continuations_after_long_enough_matches_are_verified_alone(target, min_match, first):
    drafter = drafter_for(target, lookup_first=True, lookup_first_min_ngram=min_match)
    drafter.reset(CONTEXT)
    recycle(drafter.target_logits, {4: 7, 7: 9})  # the hook the engine calls after each pass
    tree = drafter.propose(CONTEXT)
    expected = {"samd": (8, 1, 2), "lookup": (6, 1, 2), "recycling": (7, 9)}
    assert not drafter.drafted_this_round and drafter.counts["lookup_rounds"] == 1
    assert branches(tree) == {expected[s][:n] for s in first for n in range(1, len(expected[s]) + 1)}
    assert drafter.round.exits == [s for s in first for _ in expected[s]]  # each node labelled with its source


def test_free_branches_join_the_drafts_tree_where_no_match_is_long_enough(target):
    drafter = drafter_for(target)
    drafter.reset(CONTEXT)
    recycle(drafter.target_logits, {4: 7, 7: 9})
    tree = drafter.propose(CONTEXT)
    proposal = drafter.round
    assert drafter.drafted_this_round and proposal.drafted_nodes == 3  # the draft's 3 nodes come first
    assert all(isinstance(e, int) for e in proposal.exits[:3])
    assert {(8, 1, 2), (6, 1, 2), (7, 9)} <= branches(tree)  # each source's branch, sharing the draft's nodes
    free = proposal.exits[3:]
    assert set(free) <= set(FREE_SOURCES) and free[0] == "samd"  # the longest match first
    assert drafter.counts["lookup_tokens"] == len(tree) - 3 == sum(drafter.counts["free_tokens"].values())


@pytest.mark.parametrize("sources, tree, first", [
    (("lookup",), True, True), (("recycling",), True, True), (("samd",), True, True),
    (FREE_SOURCES, True, False), (FREE_SOURCES, False, True)],
    ids=["lookup", "recycling", "samd", "all-tree", "all-chain-first"])
def test_greedy_output_equals_ar_with_free_branches(target, ar_tokens, sources, tree, first):
    drafter = SD2Drafter(copy.deepcopy(target), exits=EXITS, thresholds=MIXED, tree=tree,
                         **(dict(total_token=6, depth=2, top_k=2) if tree else {}), lookup_tokens=4,
                         free_branches=sources, lookup_first=first)
    out = SpeculativeEngine(target, drafter).generate(PROMPT, 40, set())
    assert out.token_ids == ar_tokens[:40]
    stats = out.stats
    assert set(stats["free_tokens"]) == set(sources) and stats["lookup_tokens"] > 0
    assert sum(stats["free_accepted"].values()) == stats["lookup_accepted"] > 0  # free tokens were kept
    drafted = sum(stats["exit_accepted"].values()) + stats["lookup_accepted"]
    assert 0 <= drafted - (40 - out.decoding_steps) <= 1  # every accepted node counted once


class MatrixFromThePrompt(WrappedDrafter):
    """SD2 whose recycling matrix starts from a pass over the prompt (the target's own logits), so
    that its chain is proposed from the first step of a two-token draw."""

    def __init__(self, inner, target):
        super().__init__(inner)
        self.target = target
        self.target_logits = inner.target_logits

    def reset(self, prompt_ids):
        self.inner.reset(prompt_ids)
        with torch.no_grad():
            self.inner.target_logits(prompt_ids, self.target(prompt_ids[None]).logits[0])


@pytest.mark.slow  # 1,500 three-token draws
def test_sampling_with_every_free_branch_beside_a_sampled_chain_keeps_the_target_distribution():
    """A chain drawn from q (its rows) with one-hot free branches from all three sources beside it,
    two tokens deep (test_sampling.py's test)."""
    from test_sampling import PROMPT as V_PROMPT
    from test_sampling import assert_deep_drafts_keep_the_target_distribution, draw, models

    target, draft = models()
    sd2 = SD2Drafter(draft, exits=[1, 2], thresholds=[0.6, 0.0], temperature=0.9, lookup_tokens=3,
                     free_branches=FREE_SOURCES)
    drafter = MatrixFromThePrompt(sd2, target)
    prompt = V_PROMPT + [1, 4]  # (1, 4) repeats: prompt lookup and the automaton find 2, 1, 4
    drafter.reset(torch.tensor(prompt))
    assert {c.source for c in sd2.free.find(torch.tensor(prompt))} == set(FREE_SOURCES)  # each has a branch
    assert_deep_drafts_keep_the_target_distribution(draw(target, drafter, 0.9, 1.0, prompt))


@pytest.mark.parametrize("kwargs, message", [
    (dict(free_branches=("lookup",)), "free_branches needs lookup_tokens > 0"),
    (dict(lookup_tokens=3, free_branches=("lookup", "rest")), "distinct names among lookup, recycling, samd"),
    (dict(lookup_tokens=3, free_branches=("samd", "samd")), "distinct names"),
    (dict(lookup_tokens=3, free_branches=()), "got none"),
    (dict(lookup_tokens=3, lookup_first=True, lookup_first_min_ngram=0, free_branches=("samd",)), ">= 1"),
])
def test_bad_free_branch_settings_are_refused(target, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SD2Drafter(copy.deepcopy(target), exits=EXITS, thresholds=MIXED, **kwargs)
    # a longer minimum than prompt lookup's 3-gram is refused for it alone, and accepted with the automaton
    drafter_for(target, lookup_first=True, lookup_first_min_ngram=5)


@pytest.mark.parametrize("argv, message", [
    (["--free-branches", "lookup,recycling"], "free_branches needs lookup_tokens > 0"),
    (["--lookup-tokens", "3", "--free-branches", "lookup,pld"], "distinct names among"),
    (["--lookup-tokens", "3", "--lookup-first-min-ngram", "2"], "needs lookup_first"),
])
def test_bad_free_branch_flags_are_refused_before_the_target_loads(tmp_path, argv, message):
    from evaluation.eval import EvalConfigError
    from evaluation.methods import run_method

    with pytest.raises(EvalConfigError, match=message):
        run_method("sd2", ["--model-id", "x", "--drafter-path", str(tmp_path), *argv])


def test_the_free_presets_name_every_source(tmp_path):
    from evaluation.methods import REGISTRY, check_method_args, parser_for
    from evaluation.presets import PRESETS, Settings

    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text("{}")  # what the checks read before any model loads
    save_file({"weight": torch.zeros(1)}, tmp_path / "model.safetensors")
    for name, min_match in (("sd2_free", 1), ("sd2_free_joined", 2)):
        argv = ["--model-id", "m", "--device", "cpu", *PRESETS[name].argv(Settings(draft=str(tmp_path)), "cpu")]
        args = parser_for(REGISTRY["sd2"]).parse_args(argv)
        assert (args.free_branches, args.lookup_tokens, args.lookup_first, args.lookup_first_min_ngram, args.tree) \
            == (FREE_SOURCES, 3, True, min_match, True)
        check_method_args(REGISTRY["sd2"], args)
