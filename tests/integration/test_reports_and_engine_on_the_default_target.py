"""Reports and the engine against the real default target and its tokenizer."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from evaluation.equal import compare_files
from evaluation.speed import speed_report
from sd2.paths import DEFAULT_MODEL_DIR
from specdec.engine import SpeculativeEngine

from helpers import answer_record, write_answers


def test_equal_locates_differences_in_tokens(tmp_path):
    a, b = "The quick brown fox jumps over the lazy dog.", "The quick brown cat jumps over the lazy dog."
    f1 = write_answers(tmp_path / "a.jsonl", [answer_record(161, "translation", [a])])
    f2 = write_answers(tmp_path / "b.jsonl", [answer_record(161, "translation", [b])])
    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    by_token = compare_files(f1, f2, str(DEFAULT_MODEL_DIR))
    d = by_token["differences"][161]
    assert d["unit"] == "token" and d["index"] == len(tok("The quick brown", add_special_tokens=False).input_ids)
    assert "' fox jumps over the lazy'" in d["detail"] and "' cat jumps over the lazy'" in d["detail"]


def test_tokenizer_counts_both_sides_the_same_way(tmp_path):
    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    text = "The quick brown fox jumps over the lazy dog."
    n = len(tok(text, add_special_tokens=False).input_ids)
    # new_tokens disagree with the texts on purpose: the tokenizer, not new_tokens, must be used on both sides
    method = write_answers(tmp_path / "m.jsonl", [answer_record(1, "qa", [text], [999], [1.0])])
    base = write_answers(tmp_path / "b.jsonl", [answer_record(1, "qa", [text], [1], [2.0])])
    overall = speed_report([method], [base], tokenizer_path=str(DEFAULT_MODEL_DIR))["summary"]["overall"]
    assert overall["tok_s"]["mean"] == pytest.approx(n) and overall["tok_s_base"]["mean"] == pytest.approx(n / 2)
    assert overall["speedup"]["mean"] == pytest.approx(2.0)


def test_ar_engine_equals_hf_greedy_on_default_target(default_target):
    from evaluation.questions import load_questions
    from sd2.paths import SPEC_BENCH_QUESTIONS

    model, tokenizer = default_target
    engine = SpeculativeEngine(model)
    for question in load_questions(SPEC_BENCH_QUESTIONS)[::160]:  # mt_bench, qa, rag
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question["turns"][0]}],
                                               add_generation_prompt=True, tokenize=True, return_dict=False)
        out = engine.generate(list(prompt), 40, {tokenizer.eos_token_id})
        with torch.no_grad():
            ref = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 max_new_tokens=40, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.eos_token_id)
        assert out.token_ids == ref[0, len(prompt):].tolist(), question["question_id"]
