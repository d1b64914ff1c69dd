"""inference/eval.sh, a thin wrapper over evaluation.run_presets: its settings reach the presets,
every preset is checked before the first method runs, a method that fails leaves the reports of
the others, and end to end it answers and reports against AR."""
from __future__ import annotations

import json
import os
import shlex
import subprocess

import pytest
import torch
from safetensors.torch import save_file

from evaluation.inference_hf import main as inference_hf_main
from evaluation.methods import REGISTRY, parser_for
from evaluation.presets import PRESETS
from sd2.paths import DEFAULT_MODEL_DIR, REPO_ROOT
from specdec.rest_datastore import Datastore

from helpers import save_tiny_text_target, tiny_llama

EVAL_SH = REPO_ROOT / "inference" / "eval.sh"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny text target, a draft of its vocabulary (exits 6, 9, 12), head folders and a datastore file."""
    root = tmp_path_factory.mktemp("eval_sh")
    target = save_tiny_text_target(root / "target", DEFAULT_MODEL_DIR)
    draft = save_tiny_text_target(root / "draft", DEFAULT_MODEL_DIR, num_layers=12, seed=1)  # sd2_tree drafts at exit 6
    config = json.loads((draft / "config.json").read_text())
    config["sd2"] = {"exits": [6, 9, 12], "thresholds": [0.5, 0.5, 0.0]}
    (draft / "config.json").write_text(json.dumps(config))
    for name in ("eagle", "medusa", "hydra"):  # what the checks look for: a config, whole weights
        (root / name).mkdir()
        (root / name / "config.json").write_text("{}")
        save_file({"weight": torch.zeros(1)}, root / name / "model.safetensors")
    Datastore.build([[1, 2, 3, 4, 5]], 49152, sort_depth=16, progress=False).save(root / "store.npz")
    return root


def eval_sh(env: dict, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(EVAL_SH)], env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def dry_run_commands(env: dict) -> list[list[str]]:
    """The method commands eval.sh would run (DRY_RUN=1), each as argv after ``-m``."""
    done = eval_sh({**env, "DRY_RUN": "1"})
    assert done.returncode == 0, done.stderr
    return [shlex.split(line)[2:] for line in done.stdout.splitlines()]


def parsed(command: list[str]):
    """A printed command parsed by the registry's parser of its entry point's method."""
    module = command[0].removeprefix("evaluation.")
    method = {"inference_baseline": "ar"}.get(module, module.removeprefix("inference_"))
    return parser_for(REGISTRY[method]).parse_args(command[1:])


def test_eval_sh_is_valid_bash():
    subprocess.run(["bash", "-n", str(EVAL_SH)], check=True)


def test_every_default_method_is_a_preset_and_resolves(tiny, tmp_path):
    env = {"TARGET": str(tiny / "target"), "DRAFT": str(tiny / "draft"), "DATASTORE": str(tiny / "store.npz"),
           "EAGLE_HEAD": str(tiny / "eagle"), "MEDUSA_HEADS": str(tiny / "medusa"), "HYDRA_HEADS": str(tiny / "hydra"),
           "ANSWERS": str(tmp_path), "DEVICE": "cpu"}
    commands = dry_run_commands(env)
    # target-<preset>-float32-temp-0.0: model ids start with the target folder's name
    names = [parsed(c).model_id.removeprefix("target-").split("-")[0] for c in commands]
    assert names == "ar ar_hf sd2_chain sd2_tree sps sps_hf pld pld_hf lookahead rest eagle eagle2 medusa hydra".split()
    assert set(names) <= set(PRESETS)
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_eval_sh_settings_reach_the_sd2_presets(tiny, tmp_path):
    """By default sd2_chain keeps the draft's own exits and sd2_tree is a tree of 3 exit-6 nodes, both
    with lookup-first of 3; SD2_TREE, SD2_EXITS / SD2_THRESHOLDS and LOOKUP_* change them."""
    env = {"TARGET": str(tiny / "target"), "DRAFT": str(tiny / "draft"), "METHODS": "sd2_chain sd2_tree",
           "SD2_DRAFT_DTYPE": "int8", "ANSWERS": str(tmp_path)}
    chain, tree = (parsed(c) for c in dry_run_commands(env))
    assert (chain.tree, chain.submodels, chain.thresholds) == (False, None, None)
    assert (tree.tree, tree.total_token, tree.depth, tree.top_k, tree.submodels, tree.thresholds) == \
        (True, 4, 2, 2, [6], [0.0])
    assert all((a.lookup_tokens, a.lookup_first, a.draft_dtype) == (3, True, "int8") for a in (chain, tree))

    chain, tree = (parsed(c) for c in dry_run_commands({
        **env, "SD2_TREE": "--total-token auto", "SD2_EXITS": "1,2", "SD2_THRESHOLDS": "0.7,0", "LOOKUP_TOKENS": "8",
        "LOOKUP_FIRST": "0"}))
    assert tree.total_token == "auto"
    assert all((a.submodels, a.thresholds, a.lookup_tokens, a.lookup_first) == ([1, 2], [0.7, 0.0], 8, False)
               for a in (chain, tree))


def test_eval_sh_passes_the_harness_and_sharding_settings_to_every_method(tiny, tmp_path):
    env = {"TARGET": str(tiny / "target"), "METHODS": "ar pld", "ANSWERS": str(tmp_path), "NUM_WORKERS": "3",
           "NUM_GPUS_PER_MODEL": "1", "MAX_NEW_TOKENS": "16", "PER_TASK": "2", "DTYPE": "bfloat16", "TEMP": "0.5",
           "MODEL_NAME": "smoke", "DRAFT_DTYPE": ""}
    commands = dry_run_commands(env)
    assert [c[0] for c in commands] == ["evaluation.inference_baseline", "evaluation.inference_pld"]
    for command, name in zip(commands, ["ar", "pld"]):
        args = parsed(command)
        assert (args.num_workers, args.num_gpus_per_model, args.max_new_tokens, args.questions_per_task) == (3, 1, 16, 2)
        assert (args.dtype, args.temperature, args.model_path) == ("bfloat16", 0.5, str(tiny / "target"))
        assert args.answer_file == str(tmp_path / f"smoke-{name}-bfloat16-temp-0.5.jsonl")


@pytest.mark.parametrize("setting, value, message", [
    ("METHODS", "ar sd2-tree", "unknown preset 'sd2-tree' (did you mean sd2_tree?)"),
    ("METHODS", "  ", "no presets given"),
    ("SD2_TREE", "--total-token 0", "preset sd2_tree: need --total-token >= 2"),
    ("SD2_TREE", "--total-tokn 4", "preset sd2_tree: unrecognized arguments: --total-tokn 4"),
    ("DRAFT", "/no/such/draft", "--drafter-path /no/such/draft: not found"),
    ("SD2_DRAFT_DTYPE", "int4", "argument --draft-dtype: invalid choice: 'int4'"),
    ("DTYPE", "fp32", "argument --dtype: invalid choice: 'fp32'"),
    ("MAX_NEW_TOKENS", "12x", "argument --max-new-tokens: invalid int value: '12x'"),
    ("SD2_EXITS", "6;9", "argument --submodels/--exits: invalid _ints value: '6;9'"),
    ("LOOKUP_TOKENS", "0", "lookup-first needs lookup tokens > 0"),  # lookup-first is on by default
    ("LOOKUP_FIRST", "yes", "argument --lookup-first: use 0 or 1"),
    ("NUM_WORKERS", "two", "argument --num-workers: invalid int value: 'two'"),
    ("CUDA_GRAPHS", "yes", "CUDA_GRAPHS 'yes': use 0 or 1"),
    ("QUESTION_BEGIN", "1000", "no questions selected"),
])
def test_eval_sh_checks_every_preset_before_the_first_method(tiny, tmp_path, setting, value, message):
    env = {"PATH": "/usr/bin:/bin", "METHODS": "ar sd2_chain sd2_tree", "TARGET": str(tiny / "target"),
           "DRAFT": str(tiny / "draft"), "ANSWERS": str(tmp_path), setting: value}
    done = subprocess.run(["bash", str(EVAL_SH)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("error: ") == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not list(tmp_path.iterdir())  # AR did not run first


def test_cuda_graphs_on_a_cpu_are_refused_before_anything_runs(tiny, tmp_path):
    done = eval_sh({"METHODS": "ar pld", "TARGET": str(tiny / "target"), "ANSWERS": str(tmp_path), "CUDA_GRAPHS": "1",
                    "DEVICE": "cpu"})
    assert done.returncode == 2 and "preset ar: --cuda-graphs needs a CUDA device" in done.stderr, done.stderr
    assert not list(tmp_path.iterdir())


def test_a_failing_method_leaves_the_others_and_their_reports(tiny, tmp_path):
    """A draft of another vocabulary passes the checks and is refused once the target has loaded: the
    methods after it still run, the reports of the finished ones print, and eval.sh exits 1 naming it."""
    other = tmp_path / "other-vocabulary"
    tiny_llama(num_layers=1, vocab_size=1000).save_pretrained(other)
    answers = tmp_path / "answers"
    done = eval_sh({"METHODS": "ar sps pld", "TARGET": str(tiny / "target"), "DRAFT": str(other),
                    "ANSWERS": str(answers), "QUESTION_BEGIN": "80", "QUESTION_END": "82", "MAX_NEW_TOKENS": "6",
                    "WARMUP": "0", "MODEL_NAME": "smoke"}, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "error: preset(s) failed: sps (exit" in done.stderr
    assert sorted(p.name for p in answers.glob("*.jsonl")) == ["smoke-ar-float32-temp-0.0.jsonl",
                                                          "smoke-pld-float32-temp-0.0.jsonl"]
    assert "==== pld vs ar: speed" in done.stdout and "Result totally Equal!" in done.stdout
    assert "==== sps vs ar" not in done.stdout


def test_eval_sh_runs_a_method_and_reports_against_ar(tmp_path):
    settings = ["--question-begin", "80", "--question-end", "82", "--max-new-tokens", "8", "--num-warmup", "0",
                "--dtype", "float32", "--temperature", "0.0"]
    # the AR answers the reports compare with (HF generate: the same greedy tokens as AR on the engine)
    base = tmp_path / "answers" / "smoke-ar-float32-temp-0.0.jsonl"
    inference_hf_main(["--model-id", "smoke-ar-float32-temp-0.0", "--answer-file", str(base), *settings])

    # run from inference/, with ANSWERS given relative to it
    inference = REPO_ROOT / "inference"
    env = {"MODEL_NAME": "smoke", "METHODS": "pld_hf", "ANSWERS": os.path.relpath(base.parent, inference),
           "QUESTION_BEGIN": "80", "QUESTION_END": "82", "MAX_NEW_TOKENS": "8", "WARMUP": "0"}
    done = eval_sh(env, cwd=inference, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    answers = [json.loads(line) for line in (base.parent / "smoke-pld_hf-float32-temp-0.0.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in answers] == [161, 162]
    assert "==== pld_hf vs ar: speed" in done.stdout and "translation  2" in done.stdout
    assert "Result totally Equal!" in done.stdout
