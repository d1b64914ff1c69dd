"""The preset table: every registered method has a preset, every preset's flags are accepted by
its method's parser and checks, settings reach the presets that name them, and the runner checks
every preset before any model loads."""
from __future__ import annotations

import importlib
import json
import shlex

import pytest
import torch

from evaluation import presets as presets_module
from evaluation import run_presets
from evaluation.eval import EvalConfigError
from evaluation.methods import REGISTRY, check_method_args, parser_for
from evaluation.presets import PRESETS, Settings, find
from specdec.rest_datastore import Datastore


@pytest.fixture
def model_folders(tmp_path):
    """Folders the presets' model paths point at, with what the checks look for (a config, whole weights)."""
    from safetensors.torch import save_file

    for name in ("draft", "eagle", "eagle3", "medusa", "hydra"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({}))
        save_file({"weight": torch.zeros(1)}, tmp_path / name / "model.safetensors")
    Datastore.build([[1, 2, 3, 4, 5]], 49152, sort_depth=16, progress=False).save(tmp_path / "store.npz")
    return Settings(draft=str(tmp_path / "draft"), datastore=str(tmp_path / "store.npz"),
                    eagle_head=str(tmp_path / "eagle"), eagle3_head=str(tmp_path / "eagle3"), medusa_heads=str(tmp_path / "medusa"),
                    hydra_heads=str(tmp_path / "hydra"))


def _llama_cpp_installed() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def test_every_registered_method_has_a_preset():
    assert set(REGISTRY) <= {p.method for p in PRESETS.values()}


@pytest.mark.parametrize("name", sorted(set(PRESETS) - {"ar_graphs"}))  # ar_graphs needs CUDA
def test_every_preset_is_accepted_by_its_methods_parser_and_checks(name, model_folders):
    p = PRESETS[name]
    args = parser_for(REGISTRY[p.method]).parse_args(["--model-id", "m", "--device", "cpu",
                                                      *p.argv(model_folders, "cpu")])
    if p.method == "ar_llamacpp" and not _llama_cpp_installed():
        # llama-cpp-python is an optional extra (a 19-minute source build): without it the check
        # must say which extra to install, before any model loads.
        with pytest.raises(ValueError, match=r"pip install -e \.\[llamacpp\]"):
            check_method_args(REGISTRY[p.method], args)
        return
    check_method_args(REGISTRY[p.method], args)


def test_every_registered_method_has_an_entry_point_that_runs_it(monkeypatch):
    for method in REGISTRY:
        # Each entry module is imported before run_method is replaced, and the replacement is undone
        # before the next import: a module first imported under the replacement would keep it.
        entry = importlib.import_module(f"evaluation.{run_presets.entry_module(method)}")
        called = []
        record = lambda name, argv=None, doc=None: called.append(name)  # noqa: E731
        with monkeypatch.context() as patch:
            patch.setattr(entry, "run_method", record)
            entry.main([])
        assert called == [method]


def test_the_sd2_presets_share_the_sd2_settings(model_folders):
    def parsed(name, settings):
        return parser_for(REGISTRY["sd2"]).parse_args(["--model-id", "m", *PRESETS[name].argv(settings, "cpu")])

    chain, tree = parsed("sd2_chain", model_folders), parsed("sd2_tree", model_folders)
    assert (chain.tree, chain.submodels, chain.thresholds) == (False, None, None)  # the draft's own exits
    assert (tree.tree, tree.total_token, tree.depth, tree.top_k, tree.submodels, tree.thresholds) == \
        (True, 4, 2, 2, [6], [0.0])
    assert all((a.lookup_tokens, a.lookup_first, a.draft_dtype) == (3, True, "int8") for a in (chain, tree))
    assert parsed("sd2_tree_auto", model_folders).total_token == "auto"

    model_folders.sd2_exits, model_folders.sd2_thresholds = "6,9,12", "0.7,0.35,0"
    model_folders.lookup_tokens, model_folders.lookup_first = 8, False
    model_folders.sd2_tree, model_folders.sd2_draft_dtype = "--total-token auto", "bfloat16"
    chain, tree = parsed("sd2_chain", model_folders), parsed("sd2_tree", model_folders)
    assert tree.total_token == "auto"
    assert all((a.submodels, a.thresholds, a.lookup_tokens, a.lookup_first, a.draft_dtype) ==
               ([6, 9, 12], [0.7, 0.35, 0.0], 8, False, "bfloat16") for a in (chain, tree))


def test_settings_are_checked_and_quoted(model_folders):
    with pytest.raises(ValueError, match="lookup-first needs lookup tokens > 0"):
        Settings(lookup_tokens=0).fragments()
    no_lookup = Settings(lookup_tokens=0, lookup_first=False, draft="my drafts/a")
    assert PRESETS["sd2_chain"].argv(no_lookup, "cpu") == ["--drafter-path", "my drafts/a", "--draft-dtype", "int8"]
    assert PRESETS["sps"].argv(Settings(draft_dtype=""), "cpu") == ["--drafter-path", Settings().draft]  # the target's


def test_unknown_presets_are_named_with_a_hint():
    with pytest.raises(ValueError, match=r"unknown preset 'sd2-tree' \(did you mean sd2_tree\?\); known: ar, "):
        find("sd2-tree")
    with pytest.raises(ValueError, match="defined twice"):
        presets_module.preset("ar", "ar", "", "again")
    with pytest.raises(ValueError, match="not a registered method"):
        presets_module.preset("new", "no_such_method", "", "")


def runner_args(*argv):
    parser = run_presets.build_parser()
    return parser.parse_known_args(list(argv))


def test_the_runner_checks_every_preset_before_anything_runs(model_folders, tmp_path):
    common = ["--model-path", model_folders.draft, "--drafter-path", model_folders.draft]
    cases = [
        (["--presets", "ar,sd2_tree", "--sd2-tree", "--total-token 0"], "preset sd2_tree: need --total-token >= 2"),
        (["--presets", "ar,sd2_tree", "--sd2-tree", "--total-tokn 4"],
         "preset sd2_tree: unrecognized arguments: --total-tokn 4"),
        (["--presets", "ar,pld", "--dtype", "fp32"], "preset ar: argument --dtype: invalid choice: 'fp32'"),
        (["--presets", "ar", "--max-new-tokens", "12x"], "argument --max-new-tokens: invalid int value: '12x'"),
        (["--presets", "ar,nope"], "unknown preset 'nope'"),
        (["--presets", " "], "no presets given"),
        (["--presets", "ar", "--model-id", "x"], "--model-id is set per preset"),
        (["--presets", "ar", "--question-begin", "1000"], "no questions selected"),
        (["--presets", "sd2_chain", "--lookup-tokens", "0"], "lookup-first needs lookup tokens > 0"),
        (["--presets", "ar", "--cuda-graphs", "--device", "cpu"], "preset ar: --cuda-graphs needs a CUDA device"),
        (["--presets", "ar", "--model-path", str(tmp_path / "none")], "--model-path"),
    ]
    for argv, message in cases:
        args, harness = runner_args(*common, *argv)
        with pytest.raises(EvalConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            run_presets.plan_runs(args, harness)


def test_cuda_graphs_go_to_the_shared_engine_presets_only(model_folders, monkeypatch, tmp_path):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # the plan only: nothing runs on it
    args, harness = runner_args("--presets", "ar,ar_hf,pld,hf_static", "--cuda-graphs", "--device", "cuda",
                                "--answer-dir", str(tmp_path), "--model-path", model_folders.draft)
    runs, base = run_presets.plan_runs(args, harness)
    assert ["--cuda-graphs" in r.argv for r in runs] == [True, False, True, False]
    assert all(r.answer_file.name.endswith("-float32-graphs-temp-0.0.jsonl") for r in runs)
    assert base == tmp_path / "draft-ar-float32-graphs-temp-0.0.jsonl"  # named after the target's folder
    assert [r.module for r in runs] == ["inference_baseline", "inference_baseline", "inference_pld", "inference_hf"]


def test_the_harness_flags_reach_every_preset(model_folders, tmp_path):
    args, harness = runner_args("--presets", "ar sd2_chain", "--drafter-path", model_folders.draft,
                                "--answer-dir", str(tmp_path), "--model-name", "smoke", "--num-workers", "3",
                                "--max-new-tokens", "8", "--dtype", "bfloat16")
    runs, _ = run_presets.plan_runs(args, harness)
    for run in runs:
        parsed = parser_for(REGISTRY[PRESETS[run.name].method]).parse_args(run.argv)
        assert (parsed.num_workers, parsed.max_new_tokens, parsed.dtype) == (3, 8, "bfloat16")
        assert parsed.model_id == f"smoke-{run.name}-bfloat16-temp-0.0"
        assert parsed.answer_file == str(tmp_path / f"{parsed.model_id}.jsonl")
    assert shlex.join(runs[0].command()).endswith(f"--answer-file {tmp_path}/smoke-ar-bfloat16-temp-0.0.jsonl")
