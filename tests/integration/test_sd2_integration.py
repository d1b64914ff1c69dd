"""SD2 on the real default target (float32) with an untrained 12-layer truncated draft: greedy
chain and tree output equal the AR output token for token, two questions of each Spec-Bench task."""
from __future__ import annotations

import copy

import pytest

from evaluation.prompts import ChatPrompter
from evaluation.questions import TASKS, load_questions
from sd2.paths import SPEC_BENCH_QUESTIONS
from sd2train.make_draft import truncate_to_first_layers
from specdec.drafters.sd2 import SD2Drafter
from specdec.engine import SpeculativeEngine

MAX_NEW = 32


@pytest.fixture(scope="module")
def setting(default_target):
    model, tokenizer = default_target
    draft = truncate_to_first_layers(copy.deepcopy(model), 12)
    prompter = ChatPrompter.from_name(None, tokenizer)
    questions = [q for task in TASKS for q in load_questions(SPEC_BENCH_QUESTIONS, categories=[task])[:2]]
    prompts = [prompter.prompt_ids(q["turns"][:1], []) for q in questions]
    ar = SpeculativeEngine(model)
    expected = [ar.generate(p, MAX_NEW, prompter.stop_token_ids).token_ids for p in prompts]
    return model, draft, prompts, expected, prompter.stop_token_ids


@pytest.mark.parametrize("tree", [False, True], ids=["chain", "tree"])
def test_sd2_greedy_equals_ar_on_every_task(setting, tree):
    model, draft, prompts, expected, stops = setting
    drafter = SD2Drafter(draft, exits=[6, 9, 12], thresholds=[0.5, 0.5, 0.0], tree=tree,
                         total_token=16, depth=3, top_k=4)
    engine = SpeculativeEngine(model, drafter)
    used = {6: 0, 9: 0, 12: 0}
    for prompt, want in zip(prompts, expected):
        out = engine.generate(prompt, MAX_NEW, stops)
        assert out.token_ids == want
        assert sum(out.accept_lengths) == len(want)
        for e, count in out.stats["exit_tokens"].items():
            used[e] += count
    assert used[6] > 0 and used[12] > 0, used  # the cascade both stops early and goes deep


def test_reduced_head_and_auto_tree_size_stay_lossless(setting):
    model, draft, prompts, expected, stops = setting
    engine = SpeculativeEngine(model)
    costs = engine.time_verification([1, 2, 4, 8, 16, 32], past=128, repeats=1)
    vocab = list(range(8192))  # a sub-vocabulary: the lowest ids (special tokens and frequent pieces)
    drafter = SD2Drafter(draft, tree=True, total_token="auto", depth=4, top_k=10, draft_vocab=vocab,
                         verify_costs=costs, exits=[6, 9, 12], thresholds=[0.5, 0.5, 0.0])
    engine = SpeculativeEngine(model, drafter)
    for prompt, want in list(zip(prompts, expected))[::6]:
        assert engine.generate(prompt, MAX_NEW, stops).token_ids == want
