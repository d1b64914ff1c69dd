"""The engine on a CUDA device (skipped where there is none; scripts/gpu_check.sh runs these).

Float32 on the GPU must still be lossless: SD2 chain and tree greedy output equal AR's, and the
runner's logits equal the HF forward's. Half precisions must run (near-tie flips between batched
and one-token kernels are expected there, so they are not asserted equal).
"""
from __future__ import annotations

import copy

import pytest
import torch

from specdec.drafters.sd2 import SD2Drafter
from specdec.engine import SpeculativeEngine
from specdec.llama import LlamaRunner, causal_mask

from helpers import greedy_gaps, tiny_llama

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
PROMPT = [5, 9, 3, 7, 1, 2]


def cuda_llama(dtype=torch.float32):
    return tiny_llama(num_layers=4, vocab_size=64, initializer_range=0.3).to("cuda", dtype)


def test_runner_logits_equal_hf_on_cuda():
    model = cuda_llama()
    ids = torch.tensor(PROMPT, device="cuda")
    runner = LlamaRunner(model)
    cache = runner.new_cache(32)
    with torch.inference_mode():
        ours = runner.forward(ids, cache, torch.arange(len(PROMPT), device="cuda"), causal_mask(len(PROMPT), 0, "cuda"))
        theirs = model(ids[None]).logits[0]
    torch.testing.assert_close(ours.float(), theirs.float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tree", [False, True], ids=["chain", "tree"])
def test_sd2_greedy_equals_ar_on_cuda_float32(tree):
    model = cuda_llama()
    ar = SpeculativeEngine(model).generate(PROMPT, 40, set()).token_ids
    drafter = SD2Drafter(copy.deepcopy(model), exits=[1, 2, 4], thresholds=[0.3, 0.5, 0.0], tree=tree,
                         total_token=30, depth=3, top_k=4)
    out = SpeculativeEngine(model, drafter).generate(PROMPT, 40, set())
    assert out.token_ids == ar


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_emits_only_near_greedy_tokens_on_cuda(dtype):
    """Half precision may flip near-ties (batched and one-token kernels round differently), so
    its output is not asserted equal to AR's; every token must still be the float32 argmax or
    within a rounding-sized gap of it."""
    model = cuda_llama(dtype)
    drafter = SD2Drafter(copy.deepcopy(model), exits=[1, 2, 4], thresholds=[0.3, 0.5, 0.0], tree=True,
                         total_token=30, depth=3, top_k=4)
    out = SpeculativeEngine(model, drafter).generate(PROMPT, 32, set())
    assert out.new_tokens == 32 and sum(out.accept_lengths) == 32
    gaps = greedy_gaps(model, PROMPT, out.token_ids)
    assert max(gaps) < 0.3 and sum(g == 0 for g in gaps) >= 28, gaps


@pytest.mark.parametrize("method", ["ar", "sd2_chain", "sd2_tree"])
def test_cuda_graphs_greedy_equals_eager_ar_on_cuda_float32(method):
    """The graphed target (and draft) give the eager AR engine's tokens; capture happens once, up front."""
    model = cuda_llama()
    ar = SpeculativeEngine(model).generate(PROMPT, 40, set()).token_ids
    drafter = None
    if method != "ar":
        drafter = SD2Drafter(copy.deepcopy(model), exits=[1, 2, 4], thresholds=[0.3, 0.5, 0.0],
                             tree=method == "sd2_tree", total_token=30, depth=3, top_k=4, passes="cuda_graphs")
    engine = SpeculativeEngine(model, drafter, target_passes="cuda_graphs")
    assert engine.capture_graphs() > 0
    graphs = len(engine.target.passes.graphs)
    for _ in range(2):  # a second question replays the same graphs
        out = engine.generate(PROMPT, 40, set())
        assert out.token_ids == ar
        assert out.stats["graph_capture_seconds"] > 0
    assert len(engine.target.passes.graphs) == graphs  # nothing captured during generation


def test_replayed_tree_pass_equals_eager_on_cuda():
    """A captured graph replayed for a tree pass (padding, context bucket) gives the eager logits."""
    from specdec.target import EagerTarget, StaticTarget

    model = cuda_llama()
    runner = LlamaRunner(model)
    graphed = StaticTarget(runner, max_length=300, max_tokens=16, cuda_graphs=True)
    assert graphed.capture() > 0
    results = []
    for target in (EagerTarget(runner), graphed):
        target.start(60)
        with torch.inference_mode():
            target.prefill(torch.arange(3, 40, device="cuda") % 60)
            tree_mask = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]], dtype=torch.bool,
                                     device="cuda")
            results.append(target.verify(torch.tensor([11, 4, 5, 6], device="cuda"),
                                         torch.tensor([37, 38, 38, 39], device="cuda"), tree_mask).clone())
    torch.testing.assert_close(results[1], results[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tree", ["static", "dynamic"])
def test_eagle_with_cuda_graphs_equals_eager_ar_on_cuda_float32(tree):
    from sd2.eagle_head import EagleHead
    from specdec.drafters.eagle import EagleDrafter

    model = cuda_llama()
    ar = SpeculativeEngine(model).generate(PROMPT, 40, set()).token_ids
    drafter = EagleDrafter(EagleHead.for_target(model, "tiny"), tree=tree, total_token=12, depth=3, top_k=3,
                           passes="cuda_graphs")
    engine = SpeculativeEngine(model, drafter, target_passes="cuda_graphs")
    assert engine.capture_graphs() > 0 and drafter.draft.passes.graphs
    assert engine.generate(PROMPT, 40, set()).token_ids == ar
