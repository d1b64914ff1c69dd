"""inference_sd2.py / inference_baseline.py end to end on tiny checkpoints that share the default
target's tokenizer: an answer record with exit statistics, and clear errors before any generation."""
from __future__ import annotations

import json

import pytest

from evaluation import inference_baseline, inference_sd2

from helpers import tiny_llama


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, default_model_dir):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("ckpt")
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    paths = {}
    for name, layers, vocab in (("target", 4, 49152), ("draft", 2, 49152), ("other_vocab", 2, 128)):
        model = tiny_llama(num_layers=layers, vocab_size=vocab, initializer_range=0.3, seed=layers)
        if name == "draft":
            model.config.sd2 = {"exits": [1, 2], "thresholds": [0.3, 0.0], "draft_vocab_file": "draft_vocab.json"}
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = root / name
    (paths["draft"] / "draft_vocab.json").write_text(json.dumps(list(range(4096))))
    return paths


def run_sd2(checkpoints, tmp_path, *extra, drafter="draft"):
    answers = tmp_path / "answers.jsonl"
    inference_sd2.main(["--model-path", str(checkpoints["target"]), "--drafter-path", str(checkpoints[drafter]),
                        "--model-id", "tiny-sd2", "--question-end", "1", "--max-new-tokens", "8",
                        "--num-warmup", "0", "--answer-file", str(answers), *extra])
    return answers


@pytest.mark.parametrize("extra", [[], ["--tree", "--total-token", "8", "--depth", "2", "--top-k", "3"]],
                         ids=["chain", "tree"])
def test_sd2_answers_record_exit_usage(checkpoints, tmp_path, extra):
    record = json.loads(run_sd2(checkpoints, tmp_path, *extra).read_text().splitlines()[0])
    choice = record["choices"][0]
    assert "error" not in record and choice["new_tokens"] == [8, 8]  # question 81 has two turns
    stats = choice["stats"][0]
    assert set(stats["exit_tokens"]) == {"1", "2"} and sum(stats["exit_tokens"].values()) > 0
    assert {"time_draft", "time_verify", "time_other"} <= set(stats)


def test_sd2_output_equals_the_baseline(checkpoints, tmp_path):
    sd2 = json.loads(run_sd2(checkpoints, tmp_path, "--tree").read_text().splitlines()[0])
    base_file = tmp_path / "ar.jsonl"
    inference_baseline.main(["--model-path", str(checkpoints["target"]), "--model-id", "tiny-ar",
                             "--question-end", "1", "--max-new-tokens", "8", "--num-warmup", "0",
                             "--answer-file", str(base_file)])
    base = json.loads(base_file.read_text().splitlines()[0])
    assert sd2["choices"][0]["turns"] == base["choices"][0]["turns"]


@pytest.mark.parametrize("extra, drafter, message", [
    (["--submodels", "1,3"], "draft", "deeper than the draft"),
    (["--submodels", "2,1", "--thresholds", "0.5,0"], "draft", "strictly increasing"),
    (["--thresholds", "0.5,0.5,0"], "draft", "3 thresholds for 2 exits"),
    (["--thresholds", "0.5,0.1"], "draft", "last threshold must be 0"),
    ([], "other_vocab", "vocabulary"),
])
def test_bad_draft_settings_fail_before_generation(checkpoints, tmp_path, extra, drafter, message):
    with pytest.raises(ValueError, match=message):
        run_sd2(checkpoints, tmp_path, *extra, drafter=drafter)
    assert not (tmp_path / "answers.jsonl").exists()


def test_missing_draft_fails_before_generation(checkpoints, tmp_path):
    checkpoints = dict(checkpoints, missing=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="--drafter-path .*nowhere: not found"):
        run_sd2(checkpoints, tmp_path, drafter="missing")
