"""FastChat-style preprocessing: only assistant tokens (and their end-of-turn) carry labels."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from sd2train.preprocess import (
    IGNORE_INDEX,
    LazySupervisedDataset,
    PaddingCollator,
    SupervisedDataset,
    TemplateError,
    chat_turns,
    get_format,
    preprocess,
)

CONV = {"id": "x", "messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "2+2 is 4."},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": "It is 6, of course."},
]}


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    return AutoTokenizer.from_pretrained(default_model_dir)


def labelled_runs(example):
    """The labelled tokens as contiguous runs of ids."""
    runs, current = [], []
    for token, label in zip(example["input_ids"].tolist(), example["labels"].tolist()):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def test_chat_template_labels_only_assistant_replies_and_end_of_turn(tokenizer):
    example = preprocess(CONV, tokenizer, get_format(None, tokenizer), 512)
    runs = [tokenizer.decode(run) for run in labelled_runs(example)]
    assert runs == ["2+2 is 4.<|im_end|>", "It is 6, of course.<|im_end|>"]
    text = tokenizer.apply_chat_template(CONV["messages"], tokenize=False)
    assert tokenizer.decode(example["input_ids"]) == text  # the whole chat is the input


def test_vicuna_labels_only_assistant_replies_and_end_of_turn(tokenizer):
    example = preprocess(CONV, tokenizer, get_format("vicuna", tokenizer), 512)
    runs = [tokenizer.decode(run) for run in labelled_runs(example)]
    assert runs == [" 2+2 is 4.</s>", " It is 6, of course.</s>"]
    text = tokenizer.decode(example["input_ids"])
    assert text.startswith("Be brief. USER: What is 2+2? ASSISTANT: 2+2 is 4.</s>USER: And 3+3?")


def test_vicuna_template_comes_from_fastchat(tokenizer):
    from fastchat.conversation import get_conv_template

    fmt = get_format("vicuna", tokenizer)
    assert fmt.name == "vicuna_v1.1" and fmt.template.sep2 == get_conv_template("vicuna_v1.1").sep2


def test_truncation_keeps_labels_aligned(tokenizer):
    full = preprocess(CONV, tokenizer, get_format(None, tokenizer), 512)
    cut = preprocess(CONV, tokenizer, get_format(None, tokenizer), 40)
    assert len(cut["input_ids"]) == 40
    assert torch.equal(cut["labels"], full["labels"][:40])


def test_unknown_template_and_missing_chat_template_are_clear_errors(tokenizer):
    with pytest.raises(TemplateError, match="unknown conversation template 'nope'"):
        get_format("nope", tokenizer)
    plain = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    plain.chat_template = None
    with pytest.raises(TemplateError, match="has no chat template"):
        get_format(None, plain)


def test_conversation_shapes():
    user, bot = {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}
    assert chat_turns([bot, user, bot, user]) == (None, [user, bot])  # lead and trailing turns dropped
    assert chat_turns([user, user, bot]) is None
    assert chat_turns([user]) is None


def test_empty_data_after_filtering_is_a_clear_error(tokenizer):
    fmt = get_format(None, tokenizer)
    only_user = [{"id": "u", "messages": [{"role": "user", "content": "hi"}]}]
    with pytest.raises(ValueError, match="no training data left"):
        SupervisedDataset(only_user, tokenizer, fmt, 512)
    with pytest.raises(ValueError, match="no training data left"):  # the reply lies beyond max length
        SupervisedDataset([CONV], tokenizer, fmt, 8)
    with pytest.raises(ValueError, match="no usable training data"):
        LazySupervisedDataset(only_user, tokenizer, fmt, 512)[0]


def test_lazy_dataset_and_collator(tokenizer):
    fmt = get_format(None, tokenizer)
    other = {"id": "y", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    lazy = LazySupervisedDataset([CONV, other], tokenizer, fmt, 512)
    eager = SupervisedDataset([CONV, other], tokenizer, fmt, 512)
    assert torch.equal(lazy[1]["labels"], eager[1]["labels"])
    batch = PaddingCollator(tokenizer.pad_token_id)([lazy[0], lazy[1]])
    n0, n1 = len(lazy[0]["input_ids"]), len(lazy[1]["input_ids"])
    assert batch["input_ids"].shape == (2, max(n0, n1))
    assert batch["attention_mask"].sum(1).tolist() == [n0, n1]
    assert (batch["labels"][1, n1:] == IGNORE_INDEX).all()


@pytest.mark.parametrize("template", [None, "vicuna"])
def test_a_reply_cut_at_max_new_tokens_teaches_no_end_of_turn(tokenizer, template):
    fmt = get_format(template, tokenizer)
    whole = [tokenizer.decode(run) for run in labelled_runs(preprocess(CONV, tokenizer, fmt, 512))]
    cut = [tokenizer.decode(run) for run in labelled_runs(preprocess({**CONV, "cut_off": True}, tokenizer, fmt, 512))]
    assert cut[:-1] == whole[:-1]  # earlier replies keep their end of turn
    assert cut[-1].strip() == "It is 6, of course." and whole[-1].strip() != cut[-1].strip()
    assert whole[-1].startswith(cut[-1])
