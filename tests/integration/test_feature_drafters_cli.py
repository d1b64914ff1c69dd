"""The drafters that read the target's features, end to end on the default target: EAGLE and
EAGLE-2 with a head made for it (its last layer over its own features, untrained), Medusa and
Hydra with heads made for it (its LM head to start): answers equal to AR's on token ids, and
heads made for another target refused before any question."""
from __future__ import annotations

import json

import pytest

from evaluation import inference_baseline, inference_eagle, inference_eagle2, inference_hydra, inference_medusa
from evaluation.eval import EvalConfigError
from sd2.draft_heads import DraftHeads
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
    for kind in ("medusa", "hydra"):
        DraftHeads.for_target(kind, target, 3, str(default_model_dir), list(range(4096))).save(root / kind)
    return root


def answers(module, head, tmp_path, name, *extra):
    path = tmp_path / f"{name}.jsonl"
    module.main(["--drafter-path", str(head), "--model-id", name, "--answer-file", str(path), *SETTINGS, *extra])
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_answers_equal_ar(heads, tmp_path):
    base_file = tmp_path / "ar.jsonl"
    inference_baseline.main(["--model-id", "ar", "--answer-file", str(base_file), *SETTINGS])
    base = [json.loads(line) for line in base_file.read_text().splitlines()]
    for module, name, extra in ((inference_eagle, "eagle", ["--total-token", "12"]),
                                (inference_eagle2, "eagle2", ["--total-token", "16", "--depth", "3", "--top-k", "4"]),
                                (inference_eagle2, "eagle2_full_head", ["--draft-vocab-size", "0"]),
                                (inference_medusa, "medusa", ["--total-token", "16"]),
                                (inference_hydra, "hydra", ["--tree", "dynamic", "--total-token", "12", "--top-k", "3"])):
        head = heads / (name if name in ("medusa", "hydra") else "for_target")
        records = answers(module, head, tmp_path, name, *extra)
        assert [r["choices"][0]["token_ids"] for r in records] == [r["choices"][0]["token_ids"] for r in base]
        stats = records[0]["choices"][0]["stats"][0]
        assert stats["drafted_tokens"] > 0 and stats["rounds"] > 0


def test_a_head_for_another_target_is_refused(heads, tmp_path):
    with pytest.raises(EvalConfigError, match="was trained for a target with hidden_size=64"):
        answers(inference_eagle2, heads / "for_another", tmp_path, "wrong")
    assert not (tmp_path / "wrong.jsonl").exists()
