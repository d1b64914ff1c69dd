"""Benchmark every method against AR on one machine, in one run, interleaved.

    .venv/bin/python scripts/benchmark_methods.py --presets ar,ar_hf,pld,sd2_chain,sd2_tree \
        --questions-per-task 2 --max-new-tokens 128 --dtypes float32,bfloat16

Methods are the presets of inference/eval.sh and the quick start (``evaluation.presets``;
``python -m evaluation.run_presets --list`` prints them), built once per dtype on one loaded
target; every question's first turn is answered by every method in turn (interleaved, so a change
in machine load hits all methods alike), greedy, through the harness's ``Harness.answer`` (the
same prompts, timing and stop tokens as ``eval.py``), and written as Spec-Bench answer files under
``--out-dir/<dtype>/``. The report is ``speed.py``'s (speed-up over AR: total tokens / total time,
and τ per task) with ``equal.py``'s verdict on token ids, then where each SD2 method's time goes
(draft, verify, other, prefill; ms per step), which exits drafted, and ms per draft token at each
exit. Questions are chosen as ``eval.py --questions-per-task`` chooses them.

``--method NAME='BASE FLAGS'`` adds a method: BASE is a preset (its flags, then these: the last
flag wins) or a registered method (an ``sd2`` one gets the draft and SD2's draft dtype), e.g.
``--method 'exit6_first=sd2_chain --submodels 6 --thresholds 0 --lookup-tokens 4'``;
``--chain-variants`` / ``--tree-variants`` are shorthands for ``sd2`` ones. With several drafts
(``--drafter-path A,B``) every preset that uses the draft runs once per draft (``<name>@<draft folder>``).
Everything is checked before the target loads; a run writes a new folder (``--out-dir``, by
default dated) and never replaces an earlier run's answers unless told to (``--overwrite``).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

import results_page
from evaluation.answers import append_answer, load_answer_file
from evaluation.equal import compare_files
from evaluation.eval import DTYPES, INT8, EvalConfigError, make_harness, plan_eval, run_cli
from evaluation.methods import REGISTRY
from evaluation.presets import PRESETS, Preset, add_settings_args, find, settings_from
from evaluation.questions import TASKS
from evaluation.run_presets import checked_args
from evaluation.speed import measure, speed_report, token_counter
from sd2.paths import DEFAULT_MODEL_DIR, REPO_ROOT, SPEC_BENCH_QUESTIONS
from specdec.drafters.sd2 import load_sd2_drafter
from specdec.engine import SpeculativeEngine
from specdec.llama import causal_mask

DEFAULT_PRESETS = "ar,ar_hf,pld,sd2_chain,sd2_tree"
SD2_DRAFT = "--drafter-path {draft} {sd2_draft_dtype}"  # what a registered sd2 method is given, then its flags
CHAIN_FORM = "EXITS:THRESHOLDS[:LOOKUP_TOKENS[:first]]"
TREE_FORM = "TOTAL:DEPTH:TOPK[:LOOKUP_TOKENS[:DRAFT_DTYPE]]"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--question-file", default=str(SPEC_BENCH_QUESTIONS))
    p.add_argument("--questions-per-task", type=int, default=2, help="as eval.py: a task's categories in turn")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--dtypes", default="float32,bfloat16", help=f"comma-separated, of {', '.join(DTYPES)}")
    p.add_argument("--presets", "--methods", dest="presets", default=DEFAULT_PRESETS,
                   help=f"comma-separated presets (default {DEFAULT_PRESETS}; known: {', '.join(PRESETS)})")
    p.add_argument("--method", action="append", default=[], metavar="NAME=BASE FLAGS",
                   help="a preset or registered method with more flags, e.g. 'x=sd2_chain --submodels 6 --thresholds 0' "
                        "(repeatable)")
    p.add_argument("--chain-variants", default=None,
                   help=f"extra SD2 chains, {CHAIN_FORM} with '+' between values, comma-separated, e.g. "
                        "6:0,6+9+12:0.5+0.5+0,6:0:4:first (first: lookup-first)")
    p.add_argument("--tree-variants", default=None,
                   help=f"extra SD2 trees, {TREE_FORM} comma-separated, e.g. auto:4:4,16:3:4,auto:4:10:8:int8")
    p.add_argument("--baseline", default="ar",
                   help="the method speed-ups are taken against (ar: the eager engine; ar_graphs: with CUDA graphs)")
    add_settings_args(p.add_argument_group("settings the presets share (as eval.sh's; --drafter-path may list several)"))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when available")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out-dir", default=None,
                   help="answer files go to <out-dir>/<dtype>/<method>.jsonl, the results to <out-dir>/results.json "
                        "(default: outputs/benchmark_methods/<UTC date and time>)")
    p.add_argument("--overwrite", action="store_true", help="replace the answer files an earlier run left in --out-dir")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--results-page", action="store_true",
                   help="also write a dated results page (scripts/results_page.py) into --results-dir")
    p.add_argument("--results-dir", default=str(REPO_ROOT / "docs" / "results"))
    p.add_argument("--title", default=None, help="the results page's title")
    return p.parse_args(argv)


def machine(device: str) -> str:
    """What the figures were measured on, in words (the CPU model, or the GPU's name)."""
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = "a CPU"
    return f"{cpu}, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown"
    return (head.stdout.strip() + (" with uncommitted changes" if dirty else "")) if head.returncode == 0 else "unknown"


def _variant_preset(name: str, flags: list[str]) -> Preset:
    return Preset(name, "sd2", SD2_DRAFT + " " + _literal(shlex.join(flags)) + " {sd2_overrides}", "")


def _literal(flags: str) -> str:
    """Flags as given, safe from the presets' {placeholder} filling."""
    return flags.replace("{", "{{").replace("}", "}}")


def chosen_presets(args) -> dict[str, Preset]:
    """name -> preset, in the order they run: --presets, the variants, --method."""
    names = [n for n in args.presets.split(",") if n.strip()]
    if not names and not args.method:
        raise EvalConfigError(f"--presets is empty (known: {', '.join(PRESETS)})")
    chosen = {}
    for name in names:
        try:
            chosen[name.strip()] = find(name.strip())
        except ValueError as exc:
            raise EvalConfigError(f"--presets: {exc}") from None
    for variant in filter(None, (args.chain_variants or "").split(",")):
        fields = variant.split(":")
        if not 2 <= len(fields) <= 4 or (len(fields) == 4 and fields[3] != "first"):
            raise EvalConfigError(f"--chain-variants {variant!r}: use {CHAIN_FORM}, e.g. 6:0 or 6+9+12:0.5+0.5+0:4:first")
        flags = ["--submodels", fields[0].replace("+", ","), "--thresholds", fields[1].replace("+", ",")]
        if len(fields) > 2:
            flags += ["--lookup-tokens", fields[2]] + (["--lookup-first"] if len(fields) == 4 else [])
        chosen["chain_" + variant.replace(":", "_")] = _variant_preset("chain_" + variant.replace(":", "_"), flags)
    for variant in filter(None, (args.tree_variants or "").split(",")):
        fields = variant.split(":")
        if not 3 <= len(fields) <= 5:
            raise EvalConfigError(f"--tree-variants {variant!r}: use {TREE_FORM}, e.g. auto:4:10 or 16:3:4:8:int8")
        flags = ["--tree", "--total-token", fields[0], "--depth", fields[1], "--top-k", fields[2]]
        if len(fields) > 3:
            flags += ["--lookup-tokens", fields[3]]
        if len(fields) > 4:
            flags += ["--draft-dtype", fields[4]]  # after SD2's: it wins
        chosen["tree_" + variant.replace(":", "_")] = _variant_preset("tree_" + variant.replace(":", "_"), flags)
    for spec in args.method:
        name, _, text = spec.partition("=")
        base, *flags = shlex.split(text) or [""]
        extra = _literal(shlex.join(flags))
        if name and base in PRESETS:
            chosen[name] = Preset(name, PRESETS[base].method, f"{PRESETS[base].flags} {extra}", "")
        elif name and base in REGISTRY:
            chosen[name] = Preset(name, base, (SD2_DRAFT + " " if base == "sd2" else "") + extra
                                  + (" {sd2_overrides}" if base == "sd2" else ""), "")
        else:
            raise EvalConfigError(f"--method {spec!r}: use NAME='BASE FLAGS' with BASE a preset ({', '.join(PRESETS)}) "
                                  f"or a registered method ({', '.join(REGISTRY)})")
    return chosen


def method_specs(args) -> dict[str, tuple[str, list[str]]]:
    """name -> (registered method, its flags), in the order they run; AR first when not chosen."""
    settings = settings_from(args)
    try:
        settings.check()
    except ValueError as exc:
        raise EvalConfigError(str(exc)) from None
    drafts = [d for d in args.draft.split(",") if d.strip()]
    if not drafts:
        raise EvalConfigError("--drafter-path is empty")
    specs = {}
    for name, preset in chosen_presets(args).items():
        for draft in drafts if preset.uses("draft") else drafts[:1]:
            suffix = f"@{Path(draft).name}" if preset.uses("draft") and len(drafts) > 1 else ""
            specs[name + suffix] = (preset.method, preset.argv(dataclasses.replace(settings, draft=draft), args.device))
    if "ar" not in specs:
        specs = {"ar": ("ar", []), **specs}  # the reference every answer is compared with
    if args.baseline not in specs:
        raise EvalConfigError(f"--baseline {args.baseline!r} is not among the methods run ({', '.join(specs)})")
    return specs


def method_args(registered: str, flags: list[str], name: str, args, dtype_name: str) -> argparse.Namespace:
    """The registered method's parsed and checked arguments, as its inference_<method>.py would have them."""
    common = ["--model-path", args.model_path, "--model-id", name, "--question-file", args.question_file,
              "--questions-per-task", str(args.questions_per_task), "--max-new-tokens", str(args.max_new_tokens),
              "--dtype", dtype_name, "--device", args.device]
    return checked_args(name, registered, common + flags)


def checked_plan(args) -> dict[str, dict[str, argparse.Namespace]]:
    """Every check before anything loads or is written: dtype -> name -> the method's arguments."""
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in DTYPES]
    if bad or not dtypes:
        raise EvalConfigError(f"--dtypes {args.dtypes!r}: use one or more of {', '.join(DTYPES)}, comma-separated")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise EvalConfigError(f"--json {args.json}: its folder {Path(args.json).resolve().parent} does not exist")
    args.specs = method_specs(args)
    planned = {d: {name: method_args(r, flags, name, args, d) for name, (r, flags) in args.specs.items()}
               for d in dtypes}
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise EvalConfigError(f"--out-dir {out}: not a folder")
    for d in dtypes:
        earlier = sorted((out / d).glob("*.jsonl")) if (out / d).is_dir() else []
        if earlier and not args.overwrite:
            raise EvalConfigError(f"--out-dir {out}: {out / d} already holds a run's answers ({earlier[0].name}, ...); "
                                  "choose another --out-dir, or pass --overwrite to replace them")
    return planned


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_draft_tokens(draft_path, model, tokenizer, past: int = 256, repeats: int = 20) -> dict:
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
        drafter = load_sd2_drafter(draft_path, model, tokenizer,
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


def run_dtype(args, dtype_name: str, planned: dict[str, argparse.Namespace]) -> tuple[dict, dict | None]:
    """Answer files (name -> path) of every method on this dtype, and the draft-token timings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=DTYPES[dtype_name]).to(args.device).eval()
    sd2_draft = next((a.drafter_path for n, a in planned.items() if args.specs[n][0] == "sd2"), None)
    draft_costs = time_draft_tokens(sd2_draft, model, tokenizer) if sd2_draft else None
    out_dir = Path(args.out_dir) / dtype_name
    out_dir.mkdir(parents=True, exist_ok=True)
    harnesses, warm_ups, files, plan = {}, {}, {}, None
    for name, method_argv in planned.items():
        method_argv.answer_file = str(out_dir / f"{name}.jsonl")
        Path(method_argv.answer_file).unlink(missing_ok=True)  # an earlier run's, with --overwrite (checked_plan)
        plan = plan_eval(method_argv, tokenizer)  # the same questions and prompts for every method
        try:
            forward = REGISTRY[args.specs[name][0]].build(method_argv, model, tokenizer)
        except ValueError as exc:  # what the method's library refused (a draft's exits, a vocabulary, ...)
            raise EvalConfigError(f"{name}: {exc}") from None
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
    if args.out_dir is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        args.out_dir = str(REPO_ROOT / "outputs" / "benchmark_methods" / stamp)
    planned = checked_plan(args)  # everything checked: nothing loaded or written yet
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.questions_per_task} question(s) per task, {args.max_new_tokens} new tokens, torch threads "
          f"{torch.get_num_threads()}, device {args.device}; methods: "
          + "; ".join(f"{n} = {r} {shlex.join(f)}".strip() for n, (r, f) in args.specs.items()))
    results = {"command": shlex.join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "commit": commit(), "machine": machine(args.device)}
    for dtype_name, dtype_args in planned.items():
        files, draft_costs = run_dtype(args, dtype_name, dtype_args)
        summary = summarize(files, args.baseline)
        print_tables(dtype_name, summary, args.baseline)
        if draft_costs:
            print_draft_costs(dtype_name, draft_costs)
        print(f"answer files: {Path(args.out_dir) / dtype_name}/ (speed.py, equal.py and plot_results.py read them)")
        results[dtype_name] = {"methods": summary, "draft_costs": draft_costs,
                               "answer_files": {n: str(p) for n, p in files.items()}}
        (Path(args.out_dir) / "results.json").write_text(json.dumps(results, indent=1))  # after each dtype
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"results: {Path(args.out_dir) / 'results.json'}")
    if args.results_page:
        print(f"results page: {results_page.write_page(results, args.results_dir, args.title)}")
    return results


if __name__ == "__main__":
    run_cli(lambda: sys.exit(0 if main() else 1))
