"""The target's fixed-shape passes (the CUDA-graph path, run eagerly on the CPU) against the eager
ones: the same logits for trees, padding and context buckets, and the same greedy output."""
from __future__ import annotations

import copy

import pytest
import torch

from specdec.drafters.pld import PromptLookupDrafter
from specdec.drafters.sd2 import SD2Drafter
from specdec.engine import SpeculativeEngine
from specdec.llama import LlamaRunner
from specdec.target import EagerTarget, StaticTarget
from specdec.tree import ancestor_mask, depths

from helpers import PROMPT

TOL = dict(atol=2e-5, rtol=1e-4)


def tree_pass(target, past_ids: list[int], root: int, tokens: list[int], parents: list[int]):
    """Prefill ``past_ids``, then verify root + tree; the logits."""
    target.start(len(past_ids) + 1 + len(tokens) + 8)  # room for a later pass
    target.prefill(torch.tensor(past_ids))
    past = len(past_ids)
    ids = torch.tensor([root] + tokens)
    positions = torch.tensor([past] + [past + d for d in depths(parents)])
    mask = ancestor_mask([-1] + [p + 1 for p in parents]) if tokens else None
    return target.verify(ids, positions, mask)


@pytest.mark.parametrize("nodes", [0, 2, 5, 8], ids=["root-only", "padded-to-4", "padded-to-8", "full-bucket"])
def test_static_tree_pass_equals_eager(target, nodes):
    runner = LlamaRunner(target)
    past = list(range(3, 40))  # 37 cached rows: a context bucket of 256 read, 219 masked
    tokens = [(7 * i) % 60 for i in range(nodes)]
    parents = [-1, -1, 0, 1, 2, 2, 3, 0][:nodes]
    eager = tree_pass(EagerTarget(runner), past, 11, tokens, parents)
    static = tree_pass(StaticTarget(runner, max_length=300, max_tokens=16, cuda_graphs=False), past, 11, tokens,
                       parents)
    assert static.shape == eager.shape == (nodes + 1, target.config.vocab_size)
    torch.testing.assert_close(static, eager, **TOL)


def test_static_passes_keep_the_cache_like_eager_across_steps(target):
    """Padding rows written past the sequence never leak into later passes: two verification steps
    with a compaction between them give the eager logits, across a context-bucket boundary."""
    runner = LlamaRunner(target)
    results = []
    for tgt in (EagerTarget(runner), StaticTarget(runner, max_length=600, max_tokens=8, cuda_graphs=False)):
        past = [i % 60 for i in range(250)]  # 250 + a pass of 8 crosses the 256-row bucket
        first = tree_pass(tgt, past, 1, [4, 5, 6], [-1, 0, 0])
        tgt.keep(torch.tensor([251, 253]), 251)  # keep the root, nodes 0 and 2 (a path)
        assert tgt.length == 253
        second = tgt.verify(torch.tensor([9, 10]), torch.tensor([253, 254]), torch.ones(2, 2, dtype=torch.bool).tril())
        results.append((first, second))
    for eager, static in zip(*results):
        torch.testing.assert_close(static, eager, **TOL)


@pytest.mark.parametrize("method", ["ar", "pld", "sd2_tree"])
def test_static_engine_greedy_equals_eager(target, ar_tokens, method):
    """Greedy output with fixed-shape passes equals the eager AR engine (float32, token ids)."""
    drafter = {"ar": None, "pld": PromptLookupDrafter(max_ngram_size=2, num_pred_tokens=6),
               "sd2_tree": SD2Drafter(copy.deepcopy(target), exits=[1, 2, 4], thresholds=[0.3, 0.5, 0.0], tree=True,
                                      total_token=30, depth=3, top_k=4)}[method]
    engine = SpeculativeEngine(target, drafter, target_passes="static")
    assert engine.capture_graphs() == 0.0  # nothing to capture on a CPU
    out = engine.generate(PROMPT, 60, set())
    assert out.token_ids == ar_tokens
    assert sum(out.accept_lengths) == 60


def test_static_engine_cuts_trees_to_its_largest_pass(target, ar_tokens):
    drafter = SD2Drafter(copy.deepcopy(target), exits=[1, 2, 4], thresholds=[0.0, 0.0, 0.0], tree=True,
                         total_token=30, depth=3, top_k=4)
    engine = SpeculativeEngine(target, drafter, target_passes="static")
    engine.target = StaticTarget(engine.runner, engine.max_length, max_tokens=4, cuda_graphs=False)
    out = engine.generate(PROMPT, 40, set())
    assert out.token_ids == ar_tokens[:40]
    assert max(out.accept_lengths) <= 4


def test_bad_settings_are_refused(target):
    with pytest.raises(ValueError, match="target_passes must be one of"):
        SpeculativeEngine(target, target_passes="graphs")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
            SpeculativeEngine(target, target_passes="cuda_graphs")
    static = StaticTarget(LlamaRunner(target), max_length=100, max_tokens=8, cuda_graphs=False)
    with pytest.raises(ValueError, match="does not fit the static cache"):
        static.start(101)


@pytest.mark.parametrize("tree", [False, True], ids=["chain", "tree"])
@pytest.mark.parametrize("exits,thresholds", [([4], [0.0]), ([1, 2, 4], [0.3, 0.5, 0.0])], ids=["one-exit", "mixed"])
def test_static_draft_proposes_what_the_eager_draft_proposes(target, ar_tokens, tree, exits, thresholds):
    """The draft's groups at fixed shapes (deferred-exit catch-up in chunks of the largest shape
    included) draft the same tokens from the same exits as eager ones, with both engines' passes."""
    outputs = []
    for passes in ("eager", "static"):
        drafter = SD2Drafter(copy.deepcopy(target), exits=exits, thresholds=thresholds, tree=tree, total_token=30,
                             depth=3, top_k=4, passes=passes)
        if passes == "static":
            drafter.draft.passes.max_tokens = 2  # forces chunked catch-up (shapes 1 and 2 only)
            drafter.draft.passes.token_buckets = [1, 2]
        engine = SpeculativeEngine(target, drafter, target_passes=passes)
        assert engine.capture_graphs() == 0.0  # fixed shapes without graphs: nothing to capture
        outputs.append(engine.generate(PROMPT, 40, set()))
    eager, static = outputs
    assert static.token_ids == eager.token_ids == ar_tokens[:40]
    assert static.accept_lengths == eager.accept_lengths
    assert static.stats["exit_tokens"] == eager.stats["exit_tokens"]
