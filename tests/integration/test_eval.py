"""The Spec-Bench harness: schema, prompts, resume, and bad input (evaluation/eval.py)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoTokenizer

from evaluation.answers import AnswerFileError, read_answers, reorganize_answers
from evaluation.eval import (
    EvalConfigError,
    add_eval_args,
    load_target,
    plan_eval,
    run_eval,
)
from evaluation.hf_reference import hf_generate_forward
from evaluation.prompts import ChatPrompter
from evaluation.questions import QuestionFileError
from sd2.paths import DEFAULT_MODEL_DIR, REPO_ROOT, SPEC_BENCH_QUESTIONS
from specdec.types import GenerationOutput

RECORD_KEYS = {"question_id", "category", "answer_id", "model_id", "choices", "tstamp", "settings", "question_fingerprint"}
CHOICE_KEYS = {"index", "turns", "decoding_steps", "new_tokens", "wall_time", "accept_lengths", "stats", "token_ids"}


def eval_args(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    add_eval_args(parser)
    return parser.parse_args(["--model-id", "test-model", "--answer-file", str(tmp_path / "answers.jsonl"),
                              "--num-warmup", "0", "--max-new-tokens", "8", *extra])


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)


def greedy_loop_forward(model, calls=None):
    """Greedy decoding written out over the model's own forward and KV cache (one pass per token).

    ``calls`` (a list) records each call's prompt ids, so tests can look at the prompts.
    """
    @torch.inference_mode()
    def forward(prompt_ids, max_new_tokens, stop_token_ids):
        if calls is not None:
            calls.append(list(prompt_ids))
        out = model(torch.tensor([prompt_ids], device=model.device), use_cache=True)
        tokens = []
        while True:
            token = int(out.logits[0, -1].argmax())
            tokens.append(token)
            if token in stop_token_ids or len(tokens) == max_new_tokens:
                break
            out = model(torch.tensor([[token]], device=model.device), past_key_values=out.past_key_values, use_cache=True)
        return GenerationOutput(tokens, len(tokens), [1] * len(tokens), {"forward_calls": len(tokens)})

    return forward


def lines_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- prompts (tokenizer only)

def test_chat_template_turn_two_contains_turn_one_answer(tokenizer):
    prompter = ChatPrompter.from_name(None, tokenizer)
    assert prompter.name == "chat_template" and tokenizer.eos_token_id in prompter.stop_token_ids
    text = tokenizer.decode(prompter.prompt_ids(["First question?", "Second one?"], ["My first answer."]))
    assert text.endswith("<|im_start|>assistant\n")
    first, answer, second = (text.index(s) for s in ("First question?", "My first answer.", "Second one?"))
    assert first < answer < second
    assert "<|im_start|>assistant\nMy first answer.<|im_end|>" in text


def test_vicuna_template_is_fastchats(tokenizer):
    from fastchat.conversation import get_conv_template

    prompter = ChatPrompter.from_name("vicuna", tokenizer)
    conv = get_conv_template("vicuna_v1.1")
    conv.append_message("USER", "Hi?")
    conv.append_message("ASSISTANT", "Hello.")
    conv.append_message("USER", "Again?")
    conv.append_message("ASSISTANT", None)
    assert prompter.prompt_ids(["Hi?", "Again?"], ["Hello."]) == tokenizer(conv.get_prompt()).input_ids
    assert tokenizer.decode(prompter.prompt_ids(["Hi?"], [])).endswith("USER: Hi? ASSISTANT:")
    # a template whose stop string is a single token of this vocabulary stops on that token too
    chatml = ChatPrompter.from_name("orca-2", tokenizer)  # ChatML, stop string <|im_end|>
    assert chatml.stop_strings == ["<|im_end|>"] and tokenizer.convert_tokens_to_ids("<|im_end|>") in chatml.stop_token_ids


def test_answer_text_cuts_at_stop_token_and_stop_string(tokenizer):
    prompter = ChatPrompter.from_name(None, tokenizer)
    ids = tokenizer("Hello there", add_special_tokens=False).input_ids
    junk = tokenizer(" junk", add_special_tokens=False).input_ids
    assert prompter.answer_text(ids + [tokenizer.eos_token_id] + junk) == "Hello there"
    prompter.stop_strings = ["###"]
    with_stop = tokenizer("Hello ### Human: more", add_special_tokens=False).input_ids
    assert prompter.answer_text(with_stop) == "Hello"


# ---------------------------------------------------------------- bad input, before any generation

def test_unknown_template_fails_before_loading_weights(tmp_path):
    args = eval_args(tmp_path, "--conv-template", "no-such-template")
    with pytest.raises(EvalConfigError, match="unknown --conv-template 'no-such-template'"):
        load_target(args)


def test_tokenizer_without_chat_template_needs_conv_template(tokenizer):
    bare = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    bare.chat_template = None
    with pytest.raises(EvalConfigError, match="no chat template"):
        ChatPrompter.from_name(None, bare)
    assert ChatPrompter.from_name("vicuna", bare).name == "vicuna_v1.1"


def test_malformed_question_file_fails_with_file_and_line(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "category": "qa", "turns": ["Hi?"]}) + "\n{oops\n")
    with pytest.raises(QuestionFileError, match="q.jsonl:2: not valid JSON"):
        load_target(eval_args(tmp_path, "--question-file", str(questions)))
    with pytest.raises(QuestionFileError, match="not found"):
        load_target(eval_args(tmp_path, "--question-file", str(tmp_path / "absent.jsonl")))


@pytest.mark.parametrize("flag, value, message", [
    ("--max-new-tokens", "0", "max-new-tokens"), ("--temperature", "-1", "temperature"), ("--top-p", "0", "top-p"),
])
def test_bad_settings_fail_before_loading(tmp_path, flag, value, message):
    with pytest.raises(EvalConfigError, match=message):
        load_target(eval_args(tmp_path, flag, value))


def test_defaults_point_at_the_repo(tmp_path):
    parser = argparse.ArgumentParser()
    add_eval_args(parser)
    args = parser.parse_args(["--model-id", "m"])
    from evaluation.eval import answer_file, question_file

    assert args.model_path == str(DEFAULT_MODEL_DIR) and args.dtype == "auto" and args.max_new_tokens == 1024
    assert question_file(args) == SPEC_BENCH_QUESTIONS
    assert answer_file(args) == REPO_ROOT / "data" / "spec_bench" / "model_answer" / "m.jsonl"


# ---------------------------------------------------------------- answer file handling (no model)

def record(qid, **extra):
    return {"question_id": qid, "category": "qa", "answer_id": f"a{qid}", "model_id": "test-model",
            "choices": [{"index": 0, "turns": [f"answer {qid}"]}], "tstamp": 0.0, **extra}


def test_torn_last_line_is_repaired_and_middle_damage_is_an_error(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps(record(2)) + "\n" + json.dumps(record(1)) + "\n" + json.dumps(record(3))[:25])
    assert [r["question_id"] for r in read_answers(path, repair=True)] == [2, 1]
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 2
    path.write_text(json.dumps(record(1)) + "\n{broken\n" + json.dumps(record(3)) + "\n")
    with pytest.raises(AnswerFileError, match="answers.jsonl:2: malformed"):
        read_answers(path)


def test_reorganize_sorts_and_keeps_the_last_record(tmp_path):
    path = tmp_path / "answers.jsonl"
    rows = [record(12), record(3, error="too long"), record(7), record(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = reorganize_answers(path)
    assert [r["question_id"] for r in kept] == [3, 7, 12] and "error" not in kept[0]
    assert lines_of(path) == kept


# ---------------------------------------------------------------- runs on the real default target

def test_schema_turns_warmup_and_stats(tmp_path, default_target):
    model, tok = default_target
    calls = []
    qfile = tmp_path / "q.jsonl"  # question 81 (writing, two turns) and 161 (translation, one turn)
    lines = SPEC_BENCH_QUESTIONS.read_text().splitlines()
    qfile.write_text(lines[0] + "\n" + lines[80] + "\n")
    args = eval_args(tmp_path, "--question-file", str(qfile), "--num-warmup", "1")
    path = run_eval(plan_eval(args, tok), model, greedy_loop_forward(model, calls))

    answers = lines_of(path)
    assert [a["question_id"] for a in answers] == [81, 161]
    assert len(calls) == 2 + 3  # warm-up (two turns of question 81) is run but not recorded
    assert calls[0] == calls[2] and calls[1] == calls[3]  # the warm-up is the first question, same prompts
    for a, n_turns in zip(answers, (2, 1)):
        assert set(a) == RECORD_KEYS and a["model_id"] == "test-model" and len(a["answer_id"]) == 22
        (choice,) = a["choices"]
        assert set(choice) == CHOICE_KEYS and choice["index"] == 0
        assert all(len(choice[k]) == n_turns for k in ("turns", "decoding_steps", "new_tokens", "wall_time", "stats",
                                                       "token_ids"))
        assert [len(ids) for ids in choice["token_ids"]] == choice["new_tokens"]
        assert all(isinstance(t, str) and t for t in choice["turns"])
        assert all(n == 8 for n in choice["new_tokens"]) and all(t > 0 for t in choice["wall_time"])
        assert choice["accept_lengths"] == [1] * sum(choice["new_tokens"])  # turns concatenated
        assert choice["stats"] == [{"forward_calls": 8}] * n_turns
    # turn 2's prompt holds the question's turn 1 and the model's own recorded turn-1 answer
    turn2_prompt = tok.decode(calls[3])
    assert answers[0]["choices"][0]["turns"][0] in turn2_prompt
    assert turn2_prompt.index("Compose an engaging travel blog") < turn2_prompt.index(answers[0]["choices"][0]["turns"][0])
    assert turn2_prompt.endswith("Start every sentence with the letter A.<|im_end|>\n<|im_start|>assistant\n")

    # HF generate through the same harness gives the same greedy texts (the harness is forward-agnostic)
    hf_args = eval_args(tmp_path, "--question-file", str(qfile), "--answer-file", str(tmp_path / "hf.jsonl"))
    hf = lines_of(run_eval(plan_eval(hf_args, tok), model, hf_generate_forward(model)))
    assert [a["choices"][0]["turns"] for a in hf] == [a["choices"][0]["turns"] for a in answers]


def test_prompt_too_long_is_recorded_and_the_batch_goes_on(tmp_path, default_target):
    model, tok = default_target
    qfile = tmp_path / "q.jsonl"
    long_turn = "word " * (model.config.max_position_embeddings + 100)
    qfile.write_text("\n".join(json.dumps(q) for q in [
        {"question_id": 1, "category": "qa", "turns": ["What is the capital of France?"]},
        {"question_id": 2, "category": "summarization", "turns": [long_turn]},
        {"question_id": 3, "category": "qa", "turns": ["Name a prime number."]},
    ]) + "\n")
    calls = []
    args = eval_args(tmp_path, "--question-file", str(qfile))
    path = run_eval(plan_eval(args, tok), model, greedy_loop_forward(model, calls))
    answers = lines_of(path)
    assert [a["question_id"] for a in answers] == [1, 2, 3] and len(calls) == 2
    assert "error" not in answers[0] and "error" not in answers[2]
    assert "does not fit the model's context of 8192" in answers[1]["error"]
    assert answers[1]["choices"][0]["turns"] == []
    # resuming retries only the errored question (still too long), leaving the answered ones alone
    run_eval(plan_eval(args, tok), model, greedy_loop_forward(model, calls))
    again = lines_of(path)
    assert len(calls) == 2 and [a["answer_id"] for a in again[::2]] == [a["answer_id"] for a in answers[::2]]


def test_resume_after_interruption_loses_and_duplicates_nothing(tmp_path, default_target):
    model, tok = default_target
    forward = greedy_loop_forward(model)
    seen = []

    def interrupted(prompt_ids, max_new_tokens, stop_token_ids):
        seen.append(prompt_ids)
        if len(seen) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third question
        return forward(prompt_ids, max_new_tokens, stop_token_ids)

    # translation questions 161..165 (one turn each)
    args = eval_args(tmp_path, "--question-begin", "80", "--question-end", "85")
    with pytest.raises(KeyboardInterrupt):
        run_eval(plan_eval(args, tok), model, interrupted)
    first = lines_of(tmp_path / "answers.jsonl")
    assert [a["question_id"] for a in first] == [161, 162]

    with (tmp_path / "answers.jsonl").open("a") as f:  # and a write cut off by a crash
        f.write('{"question_id": 163, "category": "transl')
    calls = []
    path = run_eval(plan_eval(args, tok), model, greedy_loop_forward(model, calls))
    final = lines_of(path)
    assert [a["question_id"] for a in final] == [161, 162, 163, 164, 165] and len(calls) == 3
    assert [a["answer_id"] for a in final[:2]] == [a["answer_id"] for a in first]

    with pytest.raises(EvalConfigError, match="model_id"):
        run_eval(plan_eval(eval_args(tmp_path, "--model-id", "another-method"), tok), model, forward)


def test_killed_run_resumes(tmp_path, default_target):
    """A real SIGKILL mid-run: every record already written survives; the rerun completes the set."""
    model, tok = default_target
    path = tmp_path / "answers.jsonl"
    cmd = [sys.executable, "-m", "evaluation.inference_hf", "--model-id", "test-model", "--answer-file", str(path),
           "--question-begin", "80", "--question-end", "86", "--max-new-tokens", "8", "--num-warmup", "0"]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and child.poll() is None:
            if path.is_file() and path.read_text().count("\n") >= 2:
                break
            time.sleep(0.05)
        assert child.poll() is None, "the run finished before it could be interrupted"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    before = read_answers(path)
    assert 2 <= len(before) < 6

    from evaluation import inference_hf

    inference_hf.main(cmd[3:])  # the same command again, resumed (same settings)
    after = lines_of(path)
    assert [a["question_id"] for a in after] == list(range(161, 167))
    before_ids = {a["answer_id"] for a in before}
    assert before_ids <= {a["answer_id"] for a in after}
    assert sum(a["answer_id"] not in before_ids for a in after) == 6 - len(before)  # only the missing ones ran


def test_questions_per_task_selects_the_first_of_each_task(tmp_path):
    from evaluation.eval import selected_questions
    from evaluation.questions import TASKS, task_of

    questions = selected_questions(eval_args(tmp_path, "--questions-per-task", "8"))
    assert len(questions) == 48
    assert {t: sum(task_of(q["category"]) == t for q in questions) for t in TASKS} == {t: 8 for t in TASKS}
    assert [q["question_id"] for q in questions[:9]] == [81, 91, 101, 111, 121, 131, 141, 151, 161]
    assert len({q["category"] for q in questions[:8]}) == 8
    with pytest.raises(EvalConfigError, match="questions-per-task"):
        selected_questions(eval_args(tmp_path, "--questions-per-task", "0"))


def test_answer_file_of_another_model_fails_before_loading(tmp_path):
    (tmp_path / "answers.jsonl").write_text(json.dumps({**record(1), "model_id": "another-method"}) + "\n")
    with pytest.raises(EvalConfigError, match=r"holds answers of model_id \['another-method'\]"):
        load_target(eval_args(tmp_path))
