"""Hugging Face generate references as forward functions (evaluation/hf_reference.py)."""
from __future__ import annotations

import pytest
from test_eval import greedy_loop_forward

from evaluation.eval import EvalConfigError
from evaluation.hf_reference import hf_assisted_forward, hf_generate_forward, hf_prompt_lookup_forward
from evaluation.prompts import ChatPrompter
from evaluation.questions import load_questions
from sd2.paths import SPEC_BENCH_QUESTIONS

NEW_TOKENS = 16


@pytest.fixture(scope="module")
def prompts(default_target):
    """Chat prompts of a writing question and a summarization question (long, copy-friendly)."""
    _, tok = default_target
    prompter = ChatPrompter.from_name(None, tok)
    questions = load_questions(SPEC_BENCH_QUESTIONS, categories=["writing", "summarization"])
    chosen = [questions[0], next(q for q in questions if q["category"] == "summarization")]
    return [prompter.prompt_ids(q["turns"][:1], []) for q in chosen], prompter.stop_token_ids


@pytest.fixture(scope="module")
def greedy_reference(default_target, prompts):
    model, _ = default_target
    ids, stops = prompts
    forward = greedy_loop_forward(model)
    return [forward(p, NEW_TOKENS, stops).token_ids for p in ids]


def test_hf_generate_greedy_equals_the_plain_greedy_loop(default_target, prompts, greedy_reference):
    model, _ = default_target
    ids, stops = prompts
    forward = hf_generate_forward(model)
    for prompt, expected in zip(ids, greedy_reference):
        out = forward(prompt, NEW_TOKENS, stops)
        assert out.token_ids == expected
        assert out.accept_lengths == [1] * out.new_tokens and out.decoding_steps == out.new_tokens


def test_hf_prompt_lookup_is_lossless_and_accepts_copies(default_target, prompts, greedy_reference):
    model, _ = default_target
    ids, stops = prompts
    forward = hf_prompt_lookup_forward(model, num_tokens=10, max_ngram=3)
    outs = [forward(p, NEW_TOKENS, stops) for p in ids]
    assert [o.token_ids for o in outs] == greedy_reference
    for o in outs:
        assert sum(o.accept_lengths) == o.new_tokens and len(o.accept_lengths) == o.decoding_steps
    assert outs[1].decoding_steps < outs[1].new_tokens  # the summary copies from its article
    with pytest.raises(EvalConfigError, match="prompt lookup"):
        hf_prompt_lookup_forward(model, num_tokens=0)


def test_hf_assisted_with_the_target_as_its_own_assistant_accepts_whole_drafts(default_target, prompts,
                                                                               greedy_reference):
    """An assistant identical to the target proposes what the target would say: every draft is
    accepted, so each step adds num_assistant_tokens + 1 tokens (the target's own included)."""
    model, _ = default_target
    ids, stops = prompts
    forward = hf_assisted_forward(model, model, num_assistant_tokens=4, confidence_threshold=0.0)
    out = forward(ids[0], NEW_TOKENS, stops)
    assert out.token_ids == greedy_reference[0]
    assert out.accept_lengths[:-1] == [5] * (len(out.accept_lengths) - 1) and sum(out.accept_lengths) == NEW_TOKENS


def test_hf_sampling_is_seeded_and_uses_temperature(default_target, prompts):
    import torch

    model, _ = default_target
    ids, stops = prompts
    forward = hf_generate_forward(model, temperature=1.0, top_p=0.9)
    torch.manual_seed(0)
    a = forward(ids[0], NEW_TOKENS, stops).token_ids
    torch.manual_seed(0)
    assert forward(ids[0], NEW_TOKENS, stops).token_ids == a
