"""inference_eagle.py / inference_eagle2.py on the default target with a head made for it (its last
layer over its own features, untrained): answers equal to AR's on token ids, and a head made for
another target refused before any question."""
from __future__ import annotations

import json

import pytest

from evaluation import inference_baseline, inference_eagle, inference_eagle2
from evaluation.eval import EvalConfigError
from sd2.eagle_head import EagleHead

from helpers import tiny_llama

SETTINGS = ["--question-begin", "80", "--question-end", "82", "--max-new-tokens", "24", "--num-warmup", "0",
            "--dtype", "float32"]


@pytest.fixture(scope="module")
def heads(tmp_path_factory, default_model_dir):
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("eagle")
    target = AutoModelForCausalLM.from_pretrained(default_model_dir)
    EagleHead.for_target(target, str(default_model_dir)).save(root / "for_target")
    (root / "for_target" / "draft_vocab.json").write_text(json.dumps(list(range(2048))))  # a reduced head
    EagleHead.for_target(tiny_llama(vocab_size=49152), "tiny").save(root / "for_another")
    return root


def answers(module, head, tmp_path, name, *extra):
    path = tmp_path / f"{name}.jsonl"
    module.main(["--ea-model-path", str(head), "--model-id", name, "--answer-file", str(path), *SETTINGS, *extra])
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eagle_and_eagle2_answers_equal_ar(heads, tmp_path):
    base_file = tmp_path / "ar.jsonl"
    inference_baseline.main(["--model-id", "ar", "--answer-file", str(base_file), *SETTINGS])
    base = [json.loads(line) for line in base_file.read_text().splitlines()]
    for module, name, extra in ((inference_eagle, "eagle", ["--total-token", "12"]),
                                (inference_eagle2, "eagle2", ["--total-token", "16", "--depth", "3", "--top-k", "4"]),
                                (inference_eagle2, "eagle2_full_head", ["--draft-vocab-size", "0"])):
        records = answers(module, heads / "for_target", tmp_path, name, *extra)
        assert [r["choices"][0]["token_ids"] for r in records] == [r["choices"][0]["token_ids"] for r in base]
        stats = records[0]["choices"][0]["stats"][0]
        assert stats["drafted_tokens"] > 0 and stats["rounds"] > 0


def test_a_head_for_another_target_is_refused(heads, tmp_path):
    with pytest.raises(EvalConfigError, match="was trained for a target with hidden_size=64"):
        answers(inference_eagle2, heads / "for_another", tmp_path, "wrong")
    assert not (tmp_path / "wrong.jsonl").exists()
