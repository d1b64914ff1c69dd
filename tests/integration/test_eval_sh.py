"""inference/eval.sh end to end on two questions: a method line, then the speed and equality reports."""
from __future__ import annotations

import json
import os
import subprocess

from evaluation.hf_reference import main as hf_reference_main
from evaluation.methods import REGISTRY, parser_for
from sd2.paths import REPO_ROOT


def test_eval_sh_is_valid_bash():
    subprocess.run(["bash", "-n", str(REPO_ROOT / "inference" / "eval.sh")], check=True)


def test_eval_sh_runs_a_method_and_reports_against_ar(tmp_path):
    settings = ["--question-begin", "80", "--question-end", "82", "--max-new-tokens", "8", "--num-warmup", "0",
                "--dtype", "float32", "--temperature", "0.0"]
    # the AR answers the reports compare with (HF generate: the same greedy tokens as AR on the engine)
    base = tmp_path / "answers" / "smoke-ar-float32-temp-0.0.jsonl"
    hf_reference_main(["--model-id", "smoke-ar-float32-temp-0.0", "--answer-file", str(base), *settings])

    # run from inference/, with ANSWERS given relative to it
    inference = REPO_ROOT / "inference"
    env = {**os.environ, "MODEL_NAME": "smoke", "METHODS": "pld_hf", "ANSWERS": os.path.relpath(base.parent, inference),
           "QUESTION_BEGIN": "80", "QUESTION_END": "82", "MAX_NEW_TOKENS": "8", "WARMUP": "0"}
    done = subprocess.run(["bash", "eval.sh"], cwd=inference, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    answers = [json.loads(line) for line in (base.parent / "smoke-pld_hf-float32-temp-0.0.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in answers] == [161, 162]
    assert "==== pld_hf vs ar: speed" in done.stdout and "translation  2" in done.stdout
    assert "Result totally Equal!" in done.stdout


def test_eval_sh_passes_the_sharding_settings_to_every_method(tmp_path):
    """NUM_WORKERS, NUM_GPUS_TOTAL and NUM_GPUS_PER_MODEL reach each method's command line (a
    stand-in python records them)."""
    calls = tmp_path / "calls"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python), "METHODS": "ar pld", "ANSWERS": str(tmp_path / "answers"),
           "NUM_WORKERS": "3", "NUM_GPUS_TOTAL": "4", "NUM_GPUS_PER_MODEL": "1"}
    done = subprocess.run(["bash", str(REPO_ROOT / "inference" / "eval.sh")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in calls.read_text().splitlines() if line.startswith("-m ")]  # the method runs
    assert [line.split()[1] for line in lines] == ["evaluation.inference_baseline", "evaluation.inference_pld"]
    assert all("--num-workers 3 --num-gpus-total 4 --num-gpus-per-model 1" in line for line in lines)


def test_eval_sh_gives_cuda_graphs_to_the_engine_methods_only(tmp_path):
    """CUDA_GRAPHS=1 adds --cuda-graphs to the shared engine's methods (not the HF references) and
    names their answer files apart; with DEVICE=cpu it is refused before anything runs."""
    calls = tmp_path / "calls"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python), "METHODS": "ar ar_hf pld", "ANSWERS": str(tmp_path / "answers"),
           "CUDA_GRAPHS": "1", "DEVICE": "cuda"}
    done = subprocess.run(["bash", str(REPO_ROOT / "inference" / "eval.sh")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in calls.read_text().splitlines() if line.startswith("-m ")]
    assert ["--cuda-graphs" in line for line in lines] == [True, False, True]
    assert all("-float32-graphs-temp-0.0" in line for line in lines if "--cuda-graphs" in line)
    refused = subprocess.run(["bash", str(REPO_ROOT / "inference" / "eval.sh")], env={**env, "DEVICE": "cpu"},
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "CUDA_GRAPHS=1 needs a CUDA device" in refused.stderr


def test_eval_sh_runs_sd2_in_its_fastest_measured_setting_unless_told_otherwise(tmp_path):
    """By default sd2_chain keeps the draft's own exits and sd2_tree is a tree of 3 exit-6 nodes, both
    with lookup-first of 3; SD2_TREE, SD2_EXITS / SD2_THRESHOLDS and LOOKUP_* change them (a stand-in
    python records the command lines, and they parse)."""
    calls = tmp_path / "calls"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    python.chmod(0o755)
    draft = tmp_path / "draft"
    draft.mkdir()
    (draft / "config.json").write_text("{}")
    env = {**os.environ, "PYTHON": str(python), "METHODS": "sd2_chain sd2_tree", "DRAFT": str(draft),
           "SD2_DRAFT_DTYPE": "int8", "ANSWERS": str(tmp_path / "answers")}

    def method_lines(**settings):
        calls.unlink(missing_ok=True)
        done = subprocess.run(["bash", str(REPO_ROOT / "inference" / "eval.sh")], env={**env, **settings},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        lines = [line.split() for line in calls.read_text().splitlines() if line.startswith("-m ")]
        assert [line[1] for line in lines] == ["evaluation.inference_sd2"] * 2
        return [parser_for(REGISTRY["sd2"]).parse_args(line[2:]) for line in lines]

    chain, tree = method_lines()
    assert (chain.tree, chain.submodels, chain.thresholds) == (False, None, None)  # the draft's exits
    assert (tree.tree, tree.total_token, tree.depth, tree.top_k, tree.submodels, tree.thresholds) == \
        (True, 4, 2, 2, [6], [0.0])
    assert all((a.lookup_tokens, a.lookup_first, a.draft_dtype) == (3, True, "int8") for a in (chain, tree))

    chain, tree = method_lines(SD2_TREE="--total-token auto", SD2_EXITS="6,9,12", SD2_THRESHOLDS="0.7,0.35,0",
                               LOOKUP_TOKENS="8", LOOKUP_FIRST="0")
    assert tree.total_token == "auto"
    assert all((a.submodels, a.thresholds) == ([6, 9, 12], [0.7, 0.35, 0.0]) for a in (chain, tree))
    assert all((a.lookup_tokens, a.lookup_first) == (8, False) for a in (chain, tree))
