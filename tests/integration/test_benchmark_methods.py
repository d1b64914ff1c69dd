"""scripts/benchmark_sd2.py on tiny checkpoints: registry methods on one loaded target, interleaved,
written as answer files that speed.py and equal.py read; greedy float32 SD2 equals AR."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers import tiny_llama

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import benchmark_sd2  # noqa: E402


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, default_model_dir):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("bench")
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    for name, layers in (("target", 4), ("draft", 2)):
        model = tiny_llama(num_layers=layers, vocab_size=49152, initializer_range=0.3, seed=layers,
                           max_position_embeddings=8192)  # Spec-Bench's longest prompts fit
        if name == "draft":
            model.config.sd2 = {"exits": [1, 2], "thresholds": [0.3, 0.0]}
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


def test_methods_run_interleaved_through_the_harness_and_equal_ar(checkpoints, tmp_path, capsys):
    out = tmp_path / "bench"
    results = benchmark_sd2.main([
        "--model-path", str(checkpoints / "target"), "--drafter-path", str(checkpoints / "draft"),
        "--questions-per-task", "1", "--max-new-tokens", "6", "--dtypes", "float32", "--methods", "pld,sd2_chain",
        "--chain-variants", "2:0:4:first", "--tree-variants", "8:2:3",
        "--method", "exit1=sd2 --submodels 1 --thresholds 0", "--out-dir", str(out), "--json", str(tmp_path / "r.json")])
    methods = results["float32"]["methods"]
    assert list(methods) == ["ar", "pld", "sd2_chain", "chain_2_0_4_first", "tree_8_2_3", "exit1"]
    for name, summary in methods.items():
        records = [json.loads(line) for line in (out / "float32" / f"{name}.jsonl").read_text().splitlines()]
        # one question per task, chosen as eval.py chooses them; first turns only
        assert len(records) == 6 and all(len(r["choices"][0]["turns"]) == 1 for r in records)
        if name != "ar":
            assert summary["equal"] == "6/6", name  # float32 greedy: every method equals AR on token ids
            assert set(summary["tasks"]) >= {"mt_bench", "translation", "overall"}
    assert methods["ar"]["tasks"]["overall"]["speedup"] == 1.0 and methods["ar"]["tasks"]["overall"]["tok_s"] > 0
    assert methods["tree_8_2_3"]["mean_draft_size"] > 0 and methods["exit1"]["exit_tokens"].keys() == {1}
    printed = capsys.readouterr().out
    assert "speed-up over ar" in printed and "ms per draft token" in printed
    assert json.loads((tmp_path / "r.json").read_text())["float32"]["answer_files"]["ar"].endswith("ar.jsonl")


def test_an_unknown_method_is_refused_before_anything_loads(checkpoints):
    with pytest.raises(SystemExit):
        benchmark_sd2.main(["--drafter-path", str(checkpoints / "draft"), "--methods", "ar,eagle"])
    with pytest.raises(SystemExit):
        benchmark_sd2.main(["--drafter-path", str(checkpoints / "draft"), "--method", "x=nope --flag"])
