"""One generator per engine: the drafter's draws and the acceptance test's come from it alone, so a
seeded sampled run repeats token for token whatever else uses the global RNG in between, and two
seeds give different runs. Greedy decoding draws nothing."""
from __future__ import annotations

import copy

import pytest
import torch

from specdec.drafters.sd2 import SD2Drafter
from specdec.drafters.sps import SpeculativeSamplingDrafter
from specdec.engine import SpeculativeEngine

from helpers import PROMPT, WrappedDrafter, varied_llama


def sampling_drafters(target):
    """Drafts that are copies of the target, so sampled drafts are kept (q = p)."""
    return {
        "sd2-chain": lambda: SD2Drafter(copy.deepcopy(target), exits=[2, 4], thresholds=[0.5, 0.0], temperature=1.0,
                                          max_draft_len=6),
        "sps": lambda: SpeculativeSamplingDrafter(copy.deepcopy(target), 64, temperature=1.0, num_draft_tokens=3),
    }


def run(target, drafter, seed: int | None):
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    engine = SpeculativeEngine(target, drafter, temperature=1.0, generator=generator)
    return engine.generate(PROMPT, 12, set())


@pytest.mark.parametrize("name", ["sd2-chain", "sps"])
def test_a_seeded_sampled_run_repeats_and_another_seed_differs(target, name):
    make = sampling_drafters(target)[name]
    torch.manual_seed(123)
    first = run(target, make(), 7)
    torch.manual_seed(456)  # the global RNG moved on: an engine with its own generator does not care
    torch.rand(1000)
    again = run(target, make(), 7)
    other = run(target, make(), 8)
    assert first.token_ids == again.token_ids and first.accept_lengths == again.accept_lengths
    assert max(first.accept_lengths) > 1  # drafts were sampled and kept, not only target draws
    assert other.token_ids != first.token_ids


def test_without_a_generator_the_global_seed_reproduces_a_run(target):
    """What the evaluation harness relies on: torch.manual_seed before every question."""
    make = sampling_drafters(target)["sd2-chain"]
    runs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        runs.append(run(target, make(), None).token_ids)
    assert runs[0] == runs[1] != runs[2]


class SpiesOnTheGenerator(WrappedDrafter):
    def __init__(self, inner):
        super().__init__(inner)
        self.seen = []

    def propose(self, context, max_depth=None, generator=None):
        self.seen.append(generator)
        return self.inner.propose(context, max_depth, generator)


def test_the_drafter_is_handed_the_engines_generator(target):
    generator = torch.Generator().manual_seed(0)
    drafter = SpiesOnTheGenerator(sampling_drafters(target)["sd2-chain"]())
    SpeculativeEngine(target, drafter, temperature=1.0, generator=generator).generate(PROMPT, 8, set())
    assert drafter.seen and all(g is generator for g in drafter.seen)
    default = SpiesOnTheGenerator(sampling_drafters(target)["sd2-chain"]())
    SpeculativeEngine(target, default, temperature=1.0).generate(PROMPT, 8, set())
    assert all(g is torch.default_generator for g in default.seen)  # what torch.manual_seed seeds


def test_greedy_output_is_the_same_with_any_generator(target, ar_tokens):
    drafter = SD2Drafter(copy.deepcopy(target), exits=[2, 4], thresholds=[0.5, 0.0])
    for seed in (0, 1):
        out = SpeculativeEngine(target, drafter, generator=torch.Generator().manual_seed(seed)).generate(PROMPT, 12, set())
        assert out.token_ids == ar_tokens[:12]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_generator_on_another_device_is_refused_and_cuda_runs_repeat():
    target = varied_llama().to("cuda")
    with pytest.raises(ValueError, match="generator is on cpu but the target on cuda"):
        SpeculativeEngine(target, temperature=1.0, generator=torch.Generator())
    runs = [run_cuda(target, seed) for seed in (7, 7, 8)]
    assert runs[0] == runs[1] != runs[2]


def run_cuda(target, seed):
    drafter = SD2Drafter(copy.deepcopy(target), exits=[2, 4], thresholds=[0.5, 0.0], temperature=1.0)
    generator = torch.Generator(device="cuda").manual_seed(seed)
    return SpeculativeEngine(target, drafter, temperature=1.0, generator=generator).generate(PROMPT, 24, set()).token_ids
