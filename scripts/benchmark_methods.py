"""Benchmark SD2 against AR, PLD and Hugging Face generate on one machine, in one run, interleaved.

    .venv/bin/python scripts/benchmark_sd2.py --drafter-path models/sd2-draft-soft-12 \
        --questions-per-task 2 --max-new-tokens 128 --dtypes float32,bfloat16

Methods are the evaluation harness's (``evaluation.methods``), built once per dtype on one loaded
target; every question's first turn is answered by every method in turn (interleaved, so a change
in machine load hits all methods alike), greedy, through the harness's ``Harness.answer`` (the
same prompts, timing and stop tokens as ``eval.py``), and written as Spec-Bench answer files under
``--out-dir/<dtype>/``. The report is ``speed.py``'s (speed-up over AR: total tokens / total time,
and τ per task) with ``equal.py``'s verdict on token ids, then where each SD2 method's time goes
(draft, verify, other, prefill; ms per step), which exits drafted, and ms per draft token at each
exit. Questions are chosen as ``eval.py --questions-per-task`` chooses them.

Methods: ``--methods`` names built-in ones (ar, ar_graphs, hf, hf_static, pld, sd2_chain, sd2_tree);
``--method NAME="REGISTERED FLAGS"`` adds any registered method with its own flags, e.g.
``--method 'exit6_first=sd2 --submodels 6 --thresholds 0 --lookup-tokens 4 --lookup-first'``;
``--chain-variants`` / ``--tree-variants`` are shorthands for SD2 ones. With several drafts
(``--drafter-path A,B``) every SD2 method runs once per draft (``<name>@<draft folder>``).
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from evaluation.answers import append_answer, load_answer_file
from evaluation.equal import compare_files
from evaluation.eval import DTYPES, INT8, make_harness, plan_eval
from evaluation.methods import REGISTRY, check_method_args, parser_for
from evaluation.questions import TASKS
from evaluation.speed import measure, speed_report, token_counter
from sd2.paths import DEFAULT_MODEL_DIR, REPO_ROOT, SPEC_BENCH_QUESTIONS
from specdec.drafters.sd2 import load_sd2_drafter
from specdec.engine import SpeculativeEngine
from specdec.llama import causal_mask

# Built-in methods: registered method and flags. SD2 ones also get the draft and --draft-dtype.
BUILT_IN = {"ar": "ar", "ar_graphs": "ar --cuda-graphs", "hf": "hf", "hf_static": "hf --static-cache", "pld": "pld",
            "sd2_chain": "sd2", "sd2_tree": "sd2 --tree --total-token auto"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--drafter-path", required=True,
                   help="SD2 draft checkpoint (the best one available); several, comma-separated, run every SD2 "
                        "method once per draft (named <method>@<draft folder>), interleaved with the rest")
    p.add_argument("--question-file", default=str(SPEC_BENCH_QUESTIONS))
    p.add_argument("--questions-per-task", type=int, default=2, help="as eval.py: a task's categories in turn")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--methods", default="ar,hf,pld,sd2_chain,sd2_tree", help=f"any of {', '.join(BUILT_IN)}")
    p.add_argument("--method", action="append", default=[], metavar="NAME=FLAGS",
                   help="a registered method with its flags, e.g. 'x=sd2 --submodels 6 --thresholds 0' (repeatable)")
    p.add_argument("--chain-variants", default=None,
                   help="extra SD2 chains, EXITS:THRESHOLDS[:LOOKUP_TOKENS[:first]] with '+' between values, "
                        "comma-separated, e.g. 6:0,6+9+12:0.5+0.5+0,6:0:4:first (first: lookup-first)")
    p.add_argument("--tree-variants", default=None,
                   help="extra SD2 trees, TOTAL:DEPTH:TOPK[:LOOKUP_TOKENS[:DRAFT_DTYPE]] comma-separated, "
                        "e.g. auto:4:4,16:3:4,auto:4:10:8:int8")
    p.add_argument("--baseline", default="ar",
                   help="the method speed-ups are taken against (ar: the eager engine; ar_graphs: with CUDA graphs)")
    p.add_argument("--sd2-args", default="",
                   help="flags for every SD2 method, e.g. '--draft-vocab-size 0' or '--submodels 6 --thresholds 0'")
    p.add_argument("--draft-dtype", choices=[*DTYPES, INT8], default=None,
                   help="SD2 draft dtype (default: the target's); int8: weight-only int8 with bfloat16 activations")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out-dir", default=str(REPO_ROOT / "outputs" / "benchmark_sd2"),
                   help="answer files go to <out-dir>/<dtype>/<method>.jsonl (replaced each run)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    args.specs = method_specs(args, p)
    return args


def method_specs(args, parser) -> dict[str, tuple[str, list[str]]]:
    """name -> (registered method, its flags), in the order they run."""
    sd2_common = shlex.split(args.sd2_args) + (["--draft-dtype", args.draft_dtype] if args.draft_dtype else [])
    plain, sd2 = {}, {}
    for name in args.methods.split(","):
        if name not in BUILT_IN:
            parser.error(f"--methods: unknown method {name!r} (known: {', '.join(BUILT_IN)})")
        registered, *flags = BUILT_IN[name].split()
        (sd2 if registered == "sd2" else plain)[name] = (registered, flags)
    for variant in filter(None, (args.chain_variants or "").split(",")):
        exits, thresholds, *lookup = variant.split(":")
        flags = ["--submodels", exits.replace("+", ","), "--thresholds", thresholds.replace("+", ",")]
        if lookup:
            flags += ["--lookup-tokens", lookup[0]] + (["--lookup-first"] if lookup[1:] == ["first"] else [])
        sd2["chain_" + variant.replace(":", "_")] = ("sd2", flags)
    for variant in filter(None, (args.tree_variants or "").split(",")):
        total, depth, top_k, *extra = variant.split(":")
        flags = ["--tree", "--total-token", total, "--depth", depth, "--top-k", top_k]
        if extra:
            flags += ["--lookup-tokens", extra[0]]
        if len(extra) > 1:
            flags += ["--draft-dtype", extra[1]]  # after the common one: it wins
        sd2["tree_" + variant.replace(":", "_")] = ("sd2", flags)
    for spec in args.method:
        name, _, text = spec.partition("=")
        registered, *flags = shlex.split(text) or [""]
        if not name or registered not in REGISTRY:
            parser.error(f"--method {spec!r}: use NAME='METHOD FLAGS' with METHOD one of {', '.join(REGISTRY)}")
        (sd2 if registered == "sd2" else plain)[name] = (registered, flags)
    drafts = args.drafter_path.split(",")
    specs = dict(plain)
    for draft in drafts:
        suffix = f"@{Path(draft).name}" if len(drafts) > 1 else ""
        for name, (registered, flags) in sd2.items():
            specs[name + suffix] = (registered, ["--drafter-path", draft, *sd2_common, *flags])
    if "ar" not in specs:
        specs = {"ar": ("ar", []), **specs}  # the reference every answer is compared with
    if args.baseline not in specs:
        parser.error(f"--baseline {args.baseline!r} is not among the methods run ({', '.join(specs)})")
    return specs


def method_args(registered: str, flags: list[str], name: str, args, dtype_name: str) -> argparse.Namespace:
    """The registered method's parsed arguments, as its inference_<method>.py would parse them."""
    common = ["--model-path", args.model_path, "--model-id", name, "--question-file", args.question_file,
              "--questions-per-task", str(args.questions_per_task), "--max-new-tokens", str(args.max_new_tokens),
              "--dtype", dtype_name, "--device", args.device]
    parsed = parser_for(REGISTRY[registered]).parse_args(common + flags)
    check_method_args(REGISTRY[registered], parsed)
    return parsed


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_draft_tokens(args, model, tokenizer, past: int = 256, repeats: int = 20) -> dict:
    """ms per draft token at each exit (one row after ``past`` cached tokens: the draft's layers up
    to the exit, the final norm and the draft-vocabulary head), for the draft in the target's
    dtype, in bfloat16 and in int8 (weight-only, bfloat16 activations; CPU only); and the target's
    one-token step. Timed on the same machine, just before the questions."""
    def best_time(step) -> float:
        times = []
        for _ in range(repeats + 2):
            synchronize(model.device)
            start = time.perf_counter()
            step()
            synchronize(model.device)
            times.append(time.perf_counter() - start)
        return min(times[2:])

    target = SpeculativeEngine(model).time_verification([1], past=past, repeats=repeats)[1]
    kinds = [str(model.dtype).removeprefix("torch."), "bfloat16"] + ([INT8] if model.device.type == "cpu" else [])
    rows = {}
    for name in dict.fromkeys(kinds):
        drafter = load_sd2_drafter(args.drafter_path.split(",")[0], model, tokenizer,
                                   dtype=torch.bfloat16 if name in ("bfloat16", INT8) else None,
                                   int8_weights=name == INT8)
        runner = drafter.runner
        cache = runner.new_cache(past + 1)
        ids = torch.zeros(past + 1, dtype=torch.long, device=model.device)
        runner.run_layers(runner.embed(ids[:past]), cache, range(runner.num_layers),
                          torch.arange(past, device=model.device), causal_mask(past, 0, model.device))
        position = torch.tensor([past], device=model.device)

        def token_at(exit_: int):
            cache.crop(past)
            h = runner.run_layers(runner.embed(ids[past:]), cache, range(exit_), position, None)
            drafter.draft.logits(h)

        rows[name] = {e: best_time(lambda e=e: token_at(e)) for e in drafter.exits}
    return {"target_step_ms": 1000 * target,
            "draft_token_ms": {name: {e: 1000 * t for e, t in r.items()} for name, r in rows.items()}}


def run_dtype(args, dtype_name: str) -> tuple[dict, dict]:
    """Answer files (name -> path) of every method on this dtype, and the draft-token timings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=DTYPES[dtype_name]).to(args.device).eval()
    draft_costs = time_draft_tokens(args, model, tokenizer)
    out_dir = Path(args.out_dir) / dtype_name
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    harnesses, warm_ups, files, plan = {}, {}, {}, None
    for name, (registered, flags) in args.specs.items():
        method_argv = method_args(registered, flags, name, args, dtype_name)
        method_argv.answer_file = str(out_dir / f"{name}.jsonl")
        plan = plan_eval(method_argv, tokenizer)  # the same questions and prompts for every method
        forward = REGISTRY[registered].build(method_argv, model, tokenizer)
        harnesses[name] = make_harness(plan, model, forward)
        warm_ups[name] = make_harness(plan, model, forward, max_new_tokens=16)
        files[name] = plan.answer_path
    first_turns = [{**q, "turns": q["turns"][:1]} for q in plan.questions]
    for harness in warm_ups.values():
        harness.answer(first_turns[0])
    for question in tqdm(first_turns, desc=dtype_name):
        for name, harness in harnesses.items():
            append_answer(files[name], harness.record(question, name))
    return files, draft_costs


def summarize(files: dict, baseline: str = "ar") -> dict:
    """Per method: speed.py's figures per task against the baseline, equal.py's count against AR,
    SD2's time split."""
    summary = {}
    for name, path in files.items():
        speed = speed_report([str(path)], [str(files[baseline])])["summary"] if name != baseline else None
        equal = compare_files(path, files["ar"]) if name != "ar" else None
        answers = load_answer_file(path)
        records = list(answers.values())
        stats = [s for r in records for s in r["choices"][0]["stats"]]
        steps = sum(len(r["choices"][0]["accept_lengths"]) for r in records)
        split, exits = defaultdict(float), defaultdict(int)
        for s in stats:
            for key, value in s.items():
                if key.startswith("time_"):
                    split[key[5:]] += value
            for e, count in s.get("exit_tokens", {}).items():
                exits[int(e)] += count
        skipped = sum(s.get("skipped_rounds", 0) + s.get("lookup_rounds", 0) for s in stats)
        if speed:
            tasks = {task: {"speedup": m["speedup_total"]["mean"], "tau": m["tau"]["mean"],
                            "tok_s": m["tok_s_total"]["mean"]} for task, m in speed.items()}
        else:  # the baseline itself: its own rate
            own = measure(answers, list(answers), token_counter(None))
            tasks = {"overall": {"speedup": 1.0, "tau": own.tau, "tok_s": own.rate_total}}
        summary[name] = {
            "tasks": tasks,
            "equal": f"{equal['tasks']['overall']['equal']}/{len(records)}" if equal else "",
            "ms_per_step": {k: 1000 * v / steps for k, v in split.items()},
            "exit_tokens": dict(sorted(exits.items())), "drafted_share": 1 - skipped / steps,
            "lookup_tokens": sum(s.get("lookup_tokens", 0) for s in stats),
            "lookup_accepted": sum(s.get("lookup_accepted", 0) for s in stats),
            "mean_draft_size": sum(s.get("mean_draft_size", 0) for s in stats) / len(stats)}
    return summary


def print_tables(dtype_name: str, summary: dict, baseline: str = "ar") -> None:
    tasks = [t for t in [*TASKS, "overall"] if any(t in s["tasks"] for s in summary.values())]
    print(f"\n== {dtype_name}: speed-up over {baseline}, total tokens / total time (τ) [tok/s overall]; "
          "=AR: answers equal to the eager AR engine's on token ids")
    width = max(16, *(len(name) for name in summary))
    print(f"{'method':<{width}} " + " ".join(f"{t:>15}" for t in tasks) + f" {'tok/s':>7} {'=AR':>6}")
    for name, s in summary.items():
        cells = [f"{s['tasks'][t]['speedup']:6.2f}x ({s['tasks'][t]['tau']:4.2f})" if t in s["tasks"] else ""
                 for t in tasks]
        print(f"{name:<{width}} " + " ".join(f"{c:>15}" for c in cells)
              + f" {s['tasks']['overall']['tok_s']:7.1f} {s['equal']:>6}")
    print(f"\n== {dtype_name}: time per step (ms) and draft")
    for name, s in summary.items():
        if not s["exit_tokens"]:  # AR, HF, PLD: no model draft
            continue
        split = " ".join(f"{k} {v:.1f}" for k, v in s["ms_per_step"].items())
        lookup = f" | lookup tokens accepted {s['lookup_accepted']}/{s['lookup_tokens']}" if s["lookup_tokens"] else ""
        print(f"{name:<16} {split} | drafted in {s['drafted_share']:.0%} of rounds | draft size "
              f"{s['mean_draft_size']:.1f} | tokens per exit {s['exit_tokens']}{lookup}")


def print_draft_costs(dtype_name: str, costs: dict) -> None:
    target = costs["target_step_ms"]
    print(f"\n== {dtype_name}: ms per draft token at each exit (% of a {target:.1f} ms target step)")
    for name, per_exit in costs["draft_token_ms"].items():
        print(f"draft {name:<9} " + "  ".join(f"exit {e}: {ms:5.2f} ({100 * ms / target:4.1f}%)"
                                            for e, ms in per_exit.items()))


def main(argv=None):
    args = parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.questions_per_task} question(s) per task, {args.max_new_tokens} new tokens, torch threads "
          f"{torch.get_num_threads()}, device {args.device}, draft {args.drafter_path}; methods: "
          + "; ".join(f"{n} = {r} {' '.join(f)}".strip() for n, (r, f) in args.specs.items()))
    results = {}
    for dtype_name in args.dtypes.split(","):
        files, draft_costs = run_dtype(args, dtype_name)
        summary = summarize(files, args.baseline)
        print_tables(dtype_name, summary, args.baseline)
        print_draft_costs(dtype_name, draft_costs)
        print(f"answer files: {Path(args.out_dir) / dtype_name}/ (speed.py, equal.py and plot_results.py read them)")
        results[dtype_name] = {"methods": summary, "draft_costs": draft_costs,
                               "answer_files": {n: str(p) for n, p in files.items()}}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
