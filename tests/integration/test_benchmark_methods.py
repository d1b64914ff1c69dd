"""scripts/benchmark_methods.py on tiny checkpoints: presets and registered methods on one loaded
target, interleaved, written as answer files that speed.py and equal.py read; greedy float32 SD2
equals AR. Bad flags end with one error line before anything loads, and no run's answers are lost."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import tiny_llama

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import benchmark_methods  # noqa: E402
import benchmark_sd2  # noqa: E402
import results_page  # noqa: E402


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
    results = benchmark_methods.main([
        "--model-path", str(checkpoints / "target"), "--drafter-path", str(checkpoints / "draft"),
        "--questions-per-task", "1", "--max-new-tokens", "6", "--dtypes", "float32", "--presets", "pld,sd2_chain",
        "--chain-variants", "2:0:4:first", "--tree-variants", "8:2:3",
        "--method", "exit1=sd2 --submodels 1 --thresholds 0", "--method", "small_tree=sd2_tree --submodels 1,2 --thresholds 0.3,0",
        "--out-dir", str(out), "--json", str(tmp_path / "r.json"),
        "--results-page", "--results-dir", str(tmp_path / "pages"), "--title", "Tiny run"])
    methods = results["float32"]["methods"]
    assert list(methods) == ["ar", "pld", "sd2_chain", "chain_2_0_4_first", "tree_8_2_3", "exit1", "small_tree"]
    for name, summary in methods.items():
        records = [json.loads(line) for line in (out / "float32" / f"{name}.jsonl").read_text().splitlines()]
        # one question per task, chosen as eval.py chooses them; first turns only
        assert len(records) == 6 and all(len(r["choices"][0]["turns"]) == 1 for r in records)
        if name != "ar":
            assert summary["equal"] == "6/6", name  # float32 greedy: every method equals AR on token ids
            assert set(summary["tasks"]) >= {"mt_bench", "translation", "overall"}
    assert methods["ar"]["tasks"]["overall"]["speedup"] == 1.0 and methods["ar"]["tasks"]["overall"]["tok_s"] > 0
    assert methods["tree_8_2_3"]["mean_draft_size"] > 0 and methods["exit1"]["exit_tokens"].keys() == {1}
    assert methods["small_tree"]["mean_draft_size"] > 0  # sd2_tree's shape, the given exits
    printed = capsys.readouterr().out
    assert "speed-up over ar" in printed and "ms per draft token" in printed
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["float32"]["answer_files"]["ar"].endswith("ar.jsonl") and "--presets pld,sd2_chain" in written["command"]
    assert json.loads((out / "results.json").read_text()) == written
    assert written["commit"] and written["machine"]

    # the dated page is made from these results alone: its rows are the run's figures
    page = (tmp_path / "pages" / f"{written['date'][:10]}-tiny-run.md").read_text()
    assert page.startswith("# Tiny run") and written["command"] in page and written["commit"] in page
    chain = methods["sd2_chain"]["tasks"]
    row = next(line for line in page.splitlines() if line.startswith("| sd2_chain |"))
    assert f"{chain['overall']['speedup']:.2f}x ({chain['overall']['tau']:.2f})" in row and row.endswith("| 6/6 |")
    assert "| ar |" in page and "baseline |" in page
    with pytest.raises(ValueError, match="exists"):  # a page is never silently replaced
        results_page.write_page(written, tmp_path / "pages", "Tiny run")


def test_presets_and_methods_resolve_to_the_registered_methods_flags(checkpoints):
    draft = str(checkpoints / "draft")
    args = benchmark_methods.parse_args([
        "--drafter-path", f"{draft},elsewhere/draft_b", "--methods", "ar_hf,sd2_tree", "--sd2-draft-dtype", "bfloat16",
        "--method", "wide=sd2_tree --top-k 4", "--method", "pld5=pld --draft-tokens 5"])
    args.device = "cpu"
    specs = benchmark_methods.method_specs(args)  # every preset that uses the draft, once per draft
    assert list(specs) == ["ar", "ar_hf", "sd2_tree@draft", "sd2_tree@draft_b", "wide@draft", "wide@draft_b", "pld5"]
    assert specs["ar_hf"] == ("ar", ["--engine", "hf"])
    registered, flags = specs["wide@draft"]
    assert registered == "sd2" and flags[-2:] == ["--top-k", "4"] and "--tree" in flags
    assert flags[flags.index("--draft-dtype") + 1] == "bfloat16" and flags[flags.index("--drafter-path") + 1] == draft
    assert specs["pld5"] == ("pld", ["--draft-tokens", "5"])


def test_the_old_name_forwards_with_the_old_spellings():
    assert benchmark_sd2.translate(["--methods", "ar,hf,sd2_tree", "--draft-dtype=int8", "--max-new-tokens", "8"]) == \
        ["--presets", "ar,ar_hf,sd2_tree_auto", "--sd2-draft-dtype", "int8", "--max-new-tokens", "8"]


def bench(script: str, *argv, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / script), *argv], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def an_earlier_run(out: Path) -> str:
    (out / "float32").mkdir(parents=True)
    (out / "float32" / "ar.jsonl").write_text('{"question_id": 1}\n')
    return (out / "float32" / "ar.jsonl").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--dtypes", "float32,float33"], "--dtypes 'float32,float33': use one or more of"),
    (["--tree-variants", "4:2"], "--tree-variants '4:2': use TOTAL:DEPTH:TOPK"),
    (["--chain-variants", "6:0:4:last"], "--chain-variants '6:0:4:last': use EXITS:THRESHOLDS"),
    (["--tree-variants", "0:2:2"], "tree_0_2_2: need --total-token >= 2"),
    (["--drafter-path", "{draft},/no/second/draft"], "--drafter-path /no/second/draft: not found"),
    (["--json", "/no/such/folder/r.json"], "--json /no/such/folder/r.json: its folder /no/such/folder does not exist"),
    (["--presets", "ar,sd2-tree"], "unknown preset 'sd2-tree' (did you mean sd2_tree?)"),
    (["--method", "x=nope --flag"], "--method 'x=nope --flag': use NAME='BASE FLAGS'"),
    (["--method", "x=sd2_chain --lookup-tokns 2"], "x: unrecognized arguments: --lookup-tokns 2"),
    (["--baseline", "ar_graphs"], "--baseline 'ar_graphs' is not among the methods run"),
    ([], "already holds a run's answers (ar.jsonl, ...); choose another --out-dir, or pass --overwrite"),
])
def test_bad_input_ends_early_and_no_run_is_lost(checkpoints, tmp_path, argv, message):
    out = tmp_path / "bench"
    before = an_earlier_run(out)
    argv = [a.replace("{draft}", str(checkpoints / "draft")) for a in argv]
    done = bench("benchmark_methods.py", "--model-path", str(checkpoints / "target"), "--drafter-path",
                 str(checkpoints / "draft"), "--dtypes", "float32", "--out-dir", str(out), "--presets", "ar,sd2_chain",
                 *argv)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("error: ") == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""  # nothing ran: no table, no model loaded
    assert sorted(p.name for p in out.rglob("*")) == ["ar.jsonl", "float32"] and \
        (out / "float32" / "ar.jsonl").read_text() == before


def test_the_old_name_runs_the_same_checks(checkpoints, tmp_path):
    done = bench("benchmark_sd2.py", "--model-path", str(checkpoints / "target"), "--drafter-path",
                 str(checkpoints / "draft"), "--methods", "ar,hf,sd2_tree", "--draft-dtype", "int8", "--dtypes", "float33")
    assert done.returncode == 2 and "benchmark_methods.py" in done.stderr
    assert "error: --dtypes 'float33'" in done.stderr and "Traceback" not in done.stderr
