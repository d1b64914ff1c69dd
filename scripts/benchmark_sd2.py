"""Benchmark SD2 against AR on the same engine and against Hugging Face generate, in one run.

    .venv/bin/python scripts/benchmark_sd2.py --drafter-path models/sd2-draft-soft-12 \
        --questions-per-task 2 --max-new-tokens 128 --dtypes float32,bfloat16

For each dtype the target and draft are loaded once; every question's first turn is answered by
every method in turn (interleaved, so a change in machine load hits all methods alike), greedy.
Prints per task: tokens/s (total tokens / total time), speed-up over AR on the engine, τ (mean
tokens per target pass) and how many answers equal AR's; then where SD2's time goes (draft,
verify, other bookkeeping, prefill; ms per step) and which exits drafted.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from evaluation.eval import DTYPES, INT8, add_draft_dtype_arg, draft_dtype
from evaluation.hf_reference import hf_generate_forward
from evaluation.prompts import ChatPrompter, eos_token_ids
from evaluation.questions import TASKS, load_questions, task_of
from sd2.paths import DEFAULT_MODEL_DIR, SPEC_BENCH_QUESTIONS
from specdec.drafters.pld import PromptLookupDrafter
from specdec.drafters.sd2 import AUTO_SIZES, load_sd2_drafter
from specdec.engine import SpeculativeEngine
from specdec.llama import causal_mask


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--drafter-path", required=True,
                   help="SD2 draft checkpoint (the best one available); several, comma-separated, run every SD2 "
                        "method once per draft (named <method>@<draft folder>), interleaved with the rest")
    p.add_argument("--question-file", default=str(SPEC_BENCH_QUESTIONS))
    p.add_argument("--questions-per-task", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--methods", default="ar,hf,pld,sd2_chain,sd2_tree",
                   help="any of ar, hf, hf_static (HF generate with a static cache), pld, sd2_chain, sd2_tree")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--total-token", default="auto", help="SD2 tree size incl. root, or auto")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--tree-variants", default=None,
                   help="extra SD2 trees to compare, TOTAL:DEPTH:TOPK[:LOOKUP_TOKENS[:DRAFT_DTYPE]] comma-separated, "
                        "e.g. auto:4:4,16:3:4,auto:4:10:8:int8")
    p.add_argument("--chain-variants", default=None,
                   help="extra SD2 chains to compare, EXITS:THRESHOLDS[:LOOKUP_TOKENS[:first]] with '+' between "
                        "values, comma-separated, e.g. 6:0,6+9+12:0.5+0.5+0,6:0:4:first (first: lookup-first)")
    p.add_argument("--submodels", default=None, help="exits (default: the draft's config)")
    p.add_argument("--thresholds", default=None, help="thresholds (default: the draft's config)")
    p.add_argument("--draft-vocab-size", type=int, default=None, help="0: full draft head")
    p.add_argument("--lookup-tokens", type=int, default=0, help="SD2: prompt lookup branch of up to N tokens")
    add_draft_dtype_arg(p, int8=True)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="also write the results here")
    return p.parse_args(argv)


def build_methods(args, model, tokenizer) -> dict:
    methods = {}
    wanted = args.methods.split(",")
    if "ar" in wanted:
        methods["ar"] = SpeculativeEngine(model).generate
    if "hf" in wanted:
        methods["hf"] = hf_generate_forward(model)
    if "hf_static" in wanted:
        methods["hf_static"] = hf_generate_forward(model, static_cache=True)
    if "pld" in wanted:
        methods["pld"] = SpeculativeEngine(model, PromptLookupDrafter()).generate
    drafts = args.drafter_path.split(",")
    for draft in drafts:
        suffix = f"@{Path(draft).name}" if len(drafts) > 1 else ""
        for name, forward in build_sd2_methods(args, draft, model, tokenizer, wanted).items():
            methods[name + suffix] = forward
    return methods


def build_sd2_methods(args, drafter_path: str, model, tokenizer, wanted: list[str]) -> dict:
    methods = {}
    sd2_kwargs = dict(draft_vocab_size=args.draft_vocab_size, depth=args.depth, top_k=args.top_k,
                      dtype=draft_dtype(args), int8_weights=args.draft_dtype == INT8,
                      lookup_tokens=args.lookup_tokens,
                      exits=[int(x) for x in args.submodels.split(",")] if args.submodels else None,
                      thresholds=[float(x) for x in args.thresholds.split(",")] if args.thresholds else None)
    if "sd2_chain" in wanted:
        drafter = load_sd2_drafter(drafter_path, model, tokenizer, **sd2_kwargs)
        methods["sd2_chain"] = SpeculativeEngine(model, drafter).generate
    for variant in (args.chain_variants.split(",") if args.chain_variants else []):
        exits, thresholds, *lookup = variant.split(":")
        drafter = load_sd2_drafter(drafter_path, model, tokenizer, **dict(
            sd2_kwargs, exits=[int(x) for x in exits.split("+")], thresholds=[float(x) for x in thresholds.split("+")],
            lookup_tokens=int(lookup[0]) if lookup else args.lookup_tokens, lookup_first=lookup[1:] == ["first"]))
        methods["chain_" + variant.replace(":", "_")] = SpeculativeEngine(model, drafter).generate
    trees = [("sd2_tree", args.total_token, args.depth, args.top_k, {})] if "sd2_tree" in wanted else []
    for variant in (args.tree_variants.split(",") if args.tree_variants else []):
        total, depth, top_k, *extra = variant.split(":")
        overrides = {}
        if extra:
            overrides["lookup_tokens"] = int(extra[0])
        if len(extra) > 1:
            if extra[1] not in (*DTYPES, INT8):
                raise SystemExit(f"--tree-variants {variant}: draft dtype must be one of {[*DTYPES, INT8]}")
            # int8 drafts load in bfloat16 (load_sd2_drafter), then quantise
            overrides["dtype"] = None if extra[1] == INT8 else DTYPES[extra[1]]
            overrides["int8_weights"] = extra[1] == INT8
        trees.append((f"tree_{variant.replace(':', '_')}", total, int(depth), int(top_k), overrides))
    costs = None
    if any(total == "auto" for _, total, _, _, _ in trees):
        costs = SpeculativeEngine(model).time_verification(list(AUTO_SIZES))
        print("target verification cost (ms) by tokens:", " ".join(f"{n}:{1000 * t:.1f}" for n, t in costs.items()))
    for name, total, depth, top_k, overrides in trees:
        drafter = load_sd2_drafter(drafter_path, model, tokenizer, tree=True,
                                   total_token=total if total == "auto" else int(total), verify_costs=costs,
                                   **dict(sd2_kwargs, depth=depth, top_k=top_k, **overrides))
        methods[name] = SpeculativeEngine(model, drafter).generate
    return methods


@torch.inference_mode()
def time_draft_tokens(args, model, tokenizer, past: int = 256, repeats: int = 20) -> dict:
    """ms per draft token at each exit (one row after ``past`` cached tokens: the draft's layers up
    to the exit, the final norm and the draft-vocabulary head), for the draft in the target's
    dtype, bfloat16 and int8, against one target step (one token) measured the same way."""
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
    rows = {}
    for name in dict.fromkeys([str(model.dtype).removeprefix("torch."), "bfloat16", INT8]):
        drafter = load_sd2_drafter(args.drafter_path.split(",")[0], model, tokenizer,
                                   draft_vocab_size=args.draft_vocab_size,
                                   dtype=torch.bfloat16 if name in ("bfloat16", INT8) else None,
                                   int8_weights=name == INT8)
        runner = drafter.runner
        cache = runner.new_cache(past + 1)
        ids = torch.zeros(past + 1, dtype=torch.long, device=model.device)
        runner.run_layers(runner.embed(ids[:past]), cache, range(runner.num_layers), torch.arange(past, device=model.device),
                          causal_mask(past, 0, model.device))
        position = torch.tensor([past], device=model.device)

        def token_at(exit_: int):
            cache.crop(past)
            h = runner.run_layers(runner.embed(ids[past:]), cache, range(exit_), position, None)
            drafter.draft.logits(h)

        rows[name] = {e: best_time(lambda e=e: token_at(e)) for e in drafter.exits}
    return {"target_step_ms": 1000 * target,
            "draft_token_ms": {name: {e: 1000 * t for e, t in r.items()} for name, r in rows.items()}}


def print_draft_costs(dtype_name: str, costs: dict) -> None:
    target = costs["target_step_ms"]
    print(f"\n== {dtype_name}: ms per draft token at each exit (% of a {target:.1f} ms target step)")
    for name, per_exit in costs["draft_token_ms"].items():
        print(f"draft {name:<9} " + "  ".join(f"exit {e}: {ms:5.2f} ({100 * ms / target:4.1f}%)"
                                            for e, ms in per_exit.items()))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_dtype(args, dtype_name: str, questions: list[dict]) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=DTYPES[dtype_name]).to(args.device).eval()
    prompter = ChatPrompter.from_name(None, tokenizer)
    stops = prompter.stop_token_ids | eos_token_ids(tokenizer, model)
    draft_costs = time_draft_tokens(args, model, tokenizer)
    print_draft_costs(dtype_name, draft_costs)
    methods = build_methods(args, model, tokenizer)
    prompts = [prompter.prompt_ids(q["turns"][:1], []) for q in questions]
    for forward in methods.values():  # warm-up
        forward(prompts[0], 16, stops)
    runs = defaultdict(list)  # method -> one record per question
    for q, prompt in zip(tqdm(questions, desc=dtype_name), prompts):
        for name, forward in methods.items():
            synchronize(model.device)
            start = time.perf_counter()
            out = forward(prompt, args.max_new_tokens, stops)
            synchronize(model.device)
            elapsed = time.perf_counter() - start
            runs[name].append({"task": task_of(q["category"]), "tokens": out.token_ids, "time": elapsed,
                               "accept_lengths": out.accept_lengths, "stats": out.stats})
    return runs, draft_costs


def summarize(runs: dict) -> dict:
    """Per method and task: tok/s, speed-up over AR, τ, answers equal to AR; SD2 time split."""
    base = runs.get("ar")
    summary = {}
    for name, records in runs.items():
        rows = {}
        for task in [*TASKS, "overall"]:
            idx = [i for i, r in enumerate(records) if task in ("overall", r["task"])]
            if not idx:
                continue
            tokens = sum(len(records[i]["tokens"]) for i in idx)
            seconds = sum(records[i]["time"] for i in idx)
            lengths = [a for i in idx for a in records[i]["accept_lengths"]]
            row = {"tok_s": tokens / seconds, "tau": sum(lengths) / len(lengths)}
            if base is not None:
                base_rate = sum(len(base[i]["tokens"]) for i in idx) / sum(base[i]["time"] for i in idx)
                row["speedup"] = row["tok_s"] / base_rate
                row["equal"] = f"{sum(records[i]['tokens'] == base[i]['tokens'] for i in idx)}/{len(idx)}"
            rows[task] = row
        split = defaultdict(float)
        exits = defaultdict(int)
        steps = sum(len(r["accept_lengths"]) for r in records)
        for r in records:
            for key, value in r["stats"].items():
                if key.startswith("time_"):
                    split[key[5:]] += value
            for e, count in r["stats"].get("exit_tokens", {}).items():
                exits[int(e)] += count
        skipped = sum(r["stats"].get("skipped_rounds", 0) + r["stats"].get("lookup_rounds", 0) for r in records)
        lookup = [sum(r["stats"].get(k, 0) for r in records) for k in ("lookup_tokens", "lookup_accepted")]
        summary[name] = {"tasks": rows, "ms_per_step": {k: 1000 * v / steps for k, v in split.items()},
                         "exit_tokens": dict(sorted(exits.items())), "drafted_share": 1 - skipped / steps,
                         "lookup_tokens": lookup[0], "lookup_accepted": lookup[1],
                         "mean_draft_size": (sum(r["stats"].get("mean_draft_size", 0) for r in records) / len(records))}
    return summary


def print_tables(dtype_name: str, summary: dict) -> None:
    tasks = [t for t in [*TASKS, "overall"] if any(t in s["tasks"] for s in summary.values())]
    print(f"\n== {dtype_name}: speed-up over AR on the engine (τ) [tok/s overall]")
    width = max(16, *(len(name) for name in summary))
    print(f"{'method':<{width}} " + " ".join(f"{t:>15}" for t in tasks) + f" {'tok/s':>7} {'=AR':>6}")
    for name, s in summary.items():
        cells = []
        for t in tasks:
            row = s["tasks"].get(t)
            cells.append(f"{row.get('speedup', float('nan')):6.2f}x ({row['tau']:4.2f})" if row else " " * 15)
        overall = s["tasks"]["overall"]
        print(f"{name:<{width}} " + " ".join(f"{c:>15}" for c in cells) + f" {overall['tok_s']:7.1f} {overall.get('equal', ''):>6}")
    print(f"\n== {dtype_name}: time per step (ms) and draft")
    for name, s in summary.items():
        if not s["exit_tokens"]:  # AR, HF, PLD: no model draft
            continue
        split = " ".join(f"{k} {v:.1f}" for k, v in s["ms_per_step"].items())
        lookup = f" | lookup tokens accepted {s['lookup_accepted']}/{s['lookup_tokens']}" if s["lookup_tokens"] else ""
        print(f"{name:<16} {split} | drafted in {s['drafted_share']:.0%} of rounds | draft size "
              f"{s['mean_draft_size']:.1f} | tokens per exit {s['exit_tokens']}{lookup}")


def main(argv=None):
    args = parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    questions = [q for task in TASKS
                 for q in load_questions(args.question_file, categories=[task])[:args.questions_per_task]]
    print(f"{len(questions)} questions, {args.max_new_tokens} new tokens, torch threads {torch.get_num_threads()}, device {args.device}, "
          f"draft {args.drafter_path}")
    results = {}
    for dtype_name in args.dtypes.split(","):
        runs, draft_costs = run_dtype(args, dtype_name, questions)
        summary = summarize(runs)
        print_tables(dtype_name, summary)
        print_draft_costs(dtype_name, draft_costs)
        results[dtype_name] = {"methods": summary, "draft_costs": draft_costs}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
