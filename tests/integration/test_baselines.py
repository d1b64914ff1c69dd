"""Spec-Bench's training-free baselines on the shared engine, on the real default target in
float32: greedy output equals the AR output token for token, on a question of every task; and
the scripts refuse bad input before loading anything heavy."""
import copy

import pytest

from evaluation.eval import run_cli
from evaluation.prompts import ChatPrompter
from evaluation.questions import TASKS, load_questions, task_of
from sd2.paths import SPEC_BENCH_QUESTIONS
from sd2train.data import load_sharegpt
from sd2train.make_draft import truncate_to_first_layers
from specdec.drafters.lookahead import LookaheadDrafter
from specdec.drafters.pld import PromptLookupDrafter
from specdec.drafters.rest import RestDrafter
from specdec.drafters.sps import SpeculativeSamplingDrafter
from specdec.engine import SpeculativeEngine
from specdec.rest_datastore import build_from_chats

MAX_NEW_TOKENS = 32
STOP = {2}  # <|im_end|>


@pytest.fixture(scope="module")
def prompts(default_target):
    _, tokenizer = default_target
    prompter = ChatPrompter.from_name(None, tokenizer)
    questions = load_questions(SPEC_BENCH_QUESTIONS)
    first_of_task = [next(q for q in questions if task_of(q["category"]) == task) for task in TASKS]
    return {task_of(q["category"]): prompter.prompt_ids(q["turns"][:1], []) for q in first_of_task}


@pytest.fixture(scope="module")
def ar_outputs(default_target, prompts):
    engine = SpeculativeEngine(default_target[0])
    return {task: engine.generate(ids, MAX_NEW_TOKENS, STOP).token_ids for task, ids in prompts.items()}


def make_drafter(method: str, model, tokenizer):
    if method == "pld":
        return PromptLookupDrafter()
    if method == "lookahead":
        return LookaheadDrafter(level=5, window=7, guess=7)
    if method == "rest":  # a small datastore, built here in seconds
        store, _ = build_from_chats(tokenizer, "smollm2", load_sharegpt(verbose=False)[0][:300], "sharegpt", progress=False)
        return RestDrafter(store, num_draft=64, max_token_span=16, tokenizer=tokenizer)
    if method == "sps":  # an untrained truncated copy: accepts little, must still be exact
        draft = truncate_to_first_layers(copy.deepcopy(model), 6)
        return SpeculativeSamplingDrafter(draft, model.config.vocab_size)
    raise ValueError(method)


@pytest.mark.parametrize("method", ["pld", "lookahead", "rest", "sps"])
def test_greedy_output_equals_ar_on_every_task(method, default_target, prompts, ar_outputs):
    model, tokenizer = default_target
    engine = SpeculativeEngine(model, make_drafter(method, model, tokenizer))
    steps = tokens = 0
    for task, ids in prompts.items():
        out = engine.generate(ids, MAX_NEW_TOKENS, STOP)
        assert out.token_ids == ar_outputs[task], f"{method} differs from AR on {task}"
        assert sum(out.accept_lengths) == out.new_tokens and out.decoding_steps == len(out.accept_lengths)
        steps, tokens = steps + out.decoding_steps, tokens + out.new_tokens
    if method != "sps":  # every model-free method accepts something over six questions
        assert tokens / steps > 1.0


@pytest.mark.parametrize("script, args, message", [
    ("inference_pld", ["--max-ngram-size", "0"], "n-gram sizes"),
    ("inference_pld", ["--max-ngram-size", "2", "--min-ngram-size", "3"], "n-gram sizes"),
    ("inference_lookahead", ["--level", "1"], "lookahead level must be an integer >= 2"),
    ("inference_rest", ["--datastore-path", "no/such/datastore.npz"], "REST datastore not found"),
    ("inference_sps", ["--drafter-path", "no/such/draft"], "--drafter-path no/such/draft: not found"),
    ("inference_sps", ["--drafter-path", ".", "--engine", "hf", "--draft-dtype", "bfloat16"], "--draft-dtype is for"),
])
def test_scripts_refuse_bad_input_early(script, args, message, capsys):
    module = __import__(f"evaluation.{script}", fromlist=["main"])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: module.main(["--model-id", "t", *args]))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_sps_refuses_a_draft_with_another_vocabulary(tmp_path, capsys):
    from evaluation.eval import EvalConfigError
    from evaluation.inference_sps import main

    from helpers import tiny_llama

    tiny_llama(vocab_size=128).save_pretrained(tmp_path / "draft")
    with pytest.raises(EvalConfigError, match=r"\(128 tokens\) differs from the target's \(49152"):
        main(["--model-id", "t", "--drafter-path", str(tmp_path / "draft"), "--question-end", "1",
              "--answer-file", str(tmp_path / "a.jsonl")])
