"""The target answers a prompt mix: resume of an interrupted run, and where the report's held-out
prompts come from (tiny random target with the default tokenizer; the turn order with the target's
own history is tested in test_generate_replies.py)."""
from __future__ import annotations

import json

import pytest

from sd2train.generate_replies import generate_replies, source_data_path
from sd2train.prompt_mix import build_mix

from helpers import save_tiny_text_target


def chat(conv_id, *texts):
    speakers = ["human", "gpt"]
    return {"id": conv_id, "conversations": [{"from": speakers[i % 2], "value": t} for i, t in enumerate(texts)]}


@pytest.fixture(scope="module")
def mix_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    records = [chat(f"m{i}", f"Write a line about boat {i}.", f"SHAREGPT reply {i}.a", "Now a second line.",
                    f"SHAREGPT reply {i}.b", "And a third.", f"SHAREGPT reply {i}.c") for i in range(6)]
    records += [chat(f"q{i}", f"Why do boats {i} float?", f"SHAREGPT answer {i}") for i in range(6)]
    (root / "sharegpt.json").write_text(json.dumps(records))
    build_mix(root / "mix.jsonl", total=12, data_path=root / "sharegpt.json", heldout_fraction=0)
    return root


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory, default_model_dir):
    return save_tiny_text_target(tmp_path_factory.mktemp("target"), default_model_dir)


def run(target, out, mix, **kwargs):
    settings = {"batch_size": 4, "max_new_tokens": 3, "heldout_fraction": 0, "dtype": "float32", "all_turns": True}
    return generate_replies(str(target), str(out), str(mix), **{**settings, **kwargs})


def read(out):
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.slow
def test_an_interrupted_mixed_run_resumes_with_nothing_lost_or_duplicated(target_dir, mix_file, tmp_path):
    whole = tmp_path / "whole.jsonl"
    run(target_dir, whole, mix_file / "mix.jsonl")
    parts = tmp_path / "parts.jsonl"
    first = run(target_dir, parts, mix_file / "mix.jsonl", max_minutes=0)  # stops after its first batch
    assert first["written"] == 4
    text = parts.read_text()
    parts.write_text(text[:-40])  # killed mid-write: the last record torn
    second = run(target_dir, parts, mix_file / "mix.jsonl")
    assert second["already_done"] == 3 and second["written"] == 9
    ids = [r["id"] for r in read(parts)]
    assert len(ids) == len(set(ids)) == 12
    assert {r["id"]: r for r in read(parts)} == {r["id"]: r for r in read(whole)}  # greedy: the same replies
    # The report after training takes held-out prompts from the ShareGPT file behind the mix.
    assert source_data_path(parts) == str((mix_file / "sharegpt.json").resolve())
