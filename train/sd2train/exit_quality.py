"""Exit-quality report: how well each exit of a draft predicts its target's greedy next token.

    python -m sd2train.exit_quality --draft models/sd2-draft-soft-12 [--prompts 32 --new-tokens 64]
    python -m sd2train.exit_quality --draft models/smollm2-135m-instruct --layers 12   # untrained

Held-out ShareGPT prompts (first user turn, never trained on) are continued greedily by the target.
Along the target's own continuation, per exit: top-1 agreement with the target's greedy next
token (the acceptance proxy SD2 depends on), top-4 recall (the target's token among the exit's 4
best: what a tree can still draft) and its parts, the rank accuracies ("rank_accuracy": how
often the target's token is the exit's k-th choice, k = 1..4), the exit's mean top-1 probability
when right and when wrong, the cross-entropy to the target's distribution and the NLL of the
target's token. It also suggests per-exit confidence thresholds: the lowest at which an exit
agrees with the target at least as often as the last exit does on the same tokens. Prints a
table; writes JSON: the draft's own ``exit_quality.json`` on the standard 32 prompts, and beside
it, never over it, a report on another number of prompts (``--prompts 8``:
``exit_quality-n8.json``) or other prompt lengths.

    python -m sd2train.exit_quality --eagle models/eagle-smollm2-135m

measures an EAGLE head (``sd2train.eagle``) on the same prompts and positions instead: the token it
drafts first after a verification (depth 1), teacher-forced with the target's true features; an
EAGLE-3 head (``sd2train.eagle3``) at depths 1, 2 and 3 (the head unrolled over its own outputs).
Its rank accuracies (per depth for EAGLE-3; ``_draft_vocab``: the reduced head's) are what
``specdec.drafters.eagle`` builds EAGLE's static tree from.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sd2.draft_spec import DraftSpec, validate_exits
from sd2.eagle_head import QUALITY_REPORT_FILE as EAGLE_REPORT_FILE
from sd2.spec_bench import TASKS
from sd2train.errors import run_cli
from sd2train.exits import parse_int_list
from sd2train.agreement import agreement_table, evaluate_eagle, evaluate_eagle3, evaluate_exits, format_table
from sd2train.report_text import (
    DEFAULT_PROMPTS,
    add_heldout_args,
    answer_sequences,
    count_in_report_name,
    heldout_sequences,
    prompt_set_title,
    report_name,
    write_report,
)
from sd2train.thresholds import write_thresholds

REPORT_FILE = "exit_quality.json"


def load_draft(draft_path, layers: int | None) -> tuple[torch.nn.Module, DraftSpec | None]:
    """(draft model in float32, its spec; None for a target truncated to ``layers``, which gets
    the default exits for that depth)."""
    from transformers import AutoModelForCausalLM

    from sd2train.make_draft import truncate_to_first_layers

    model = AutoModelForCausalLM.from_pretrained(draft_path, dtype=torch.float32).eval()
    if layers is not None:
        truncate_to_first_layers(model, layers)
        return model, None
    if not getattr(model.config, "sd2", None):
        raise ValueError(f"{draft_path} is not a draft (no sd2 entry in its config): pass --layers N "
                         "to measure the target's first N layers untrained")
    spec = DraftSpec.from_config(model.config)
    if spec.exit_adapters:
        from sd2.exit_adapters import load_exit_adapters

        load_exit_adapters(model, draft_path, spec.exits)
    return model, spec


@dataclass
class Measured:
    """A draft, the exits to measure, and the target they are measured against (float32)."""

    draft: torch.nn.Module
    spec: DraftSpec | None  # None: a target truncated to --layers, untrained
    exits: list[int]
    target_path: str
    target: torch.nn.Module
    tokenizer: object
    vocab_ids: torch.Tensor | None  # the draft vocabulary, if the draft has one


def load_measured(draft_path, target_path=None, exits=None, layers=None) -> Measured:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    draft, spec = load_draft(draft_path, layers)
    exits = validate_exits(exits or (spec or DraftSpec.from_config(draft.config)).exits,
                           draft.config.num_hidden_layers)
    target_path = str(target_path or (spec.target if spec else draft_path))
    target = AutoModelForCausalLM.from_pretrained(target_path, dtype=torch.float32).eval()
    vocab = spec.load_vocab(draft_path) if spec else None
    return Measured(draft, spec, exits, target_path, target, AutoTokenizer.from_pretrained(target_path),
                    torch.tensor(vocab) if vocab is not None else None)


def exit_quality(draft_path, target_path=None, exits=None, layers=None, num_prompts: int = 32,
                 new_tokens: int = 64, max_prompt_tokens: int = 192, data_path=None,
                 conv_template=None, write: bool = True, update_thresholds: bool = False,
                 heldout_fraction: float = 0.02, min_prompt_tokens: int = 0,
                 exit_costs: list[float] | None = None, draft_vocab_size: int | None = None,
                 prompt_count_in_name: int | None = None) -> dict:
    """The held-out report (see the module's docstring); ``exit_costs`` (one per exit, in target
    steps per draft token) adds the thresholds suggested for speed; ``draft_vocab_size`` measures
    the draft head over the first N ids of the draft vocabulary (inference's ``--draft-vocab-size``),
    written beside the standard report, as is a report whose ``prompt_count_in_name`` is given."""
    started = time.time()
    m = load_measured(draft_path, target_path, exits, layers)
    if draft_vocab_size is not None:
        if m.vocab_ids is None or not 0 < draft_vocab_size <= len(m.vocab_ids):
            have = "no draft vocabulary" if m.vocab_ids is None else f"a draft vocabulary of {len(m.vocab_ids)}"
            raise ValueError(f"--draft-vocab-size {draft_vocab_size}: {draft_path} has {have}")
        m.vocab_ids = m.vocab_ids[:draft_vocab_size]  # the most frequent first, as make_draft writes them
    exits = m.exits
    if exit_costs is not None and (len(exit_costs) != len(exits) or min(exit_costs) < 0):
        raise ValueError(f"{len(exit_costs)} exit costs for {len(exits)} exits {exits}: give one cost >= 0 per exit")
    prompts, sequences = heldout_sequences(m.target_path, m.target, m.tokenizer, conv_template, num_prompts,
                                           new_tokens, max_prompt_tokens, min_prompt_tokens, data_path, heldout_fraction)
    report = {"draft": str(draft_path), "target": m.target_path, "exits": exits, "prompts": len(prompts),
              "prompt_tokens": [min_prompt_tokens, max_prompt_tokens], "new_tokens": new_tokens}
    report.update(evaluate_exits(m.draft, m.target, sequences, [len(p) for p in prompts], exits, m.vocab_ids,
                                 dict(zip(exits, exit_costs)) if exit_costs else None))
    if m.vocab_ids is not None:
        report["draft_vocab_size"] = len(m.vocab_ids)
    report["seconds"] = round(time.time() - started, 1)
    print(format_table(report))
    if write and layers is None:
        name = report_name(REPORT_FILE, min_prompt_tokens, max_prompt_tokens, prompt_count_in_name)
        if draft_vocab_size is not None:
            name = f"{Path(name).stem}-vocab-{draft_vocab_size}.json"
        write_report(Path(draft_path, name), report)
        if update_thresholds and exits == m.spec.exits and min_prompt_tokens == 0 and draft_vocab_size is None:
            chosen = report["speed_suggested"]["thresholds"] if exit_costs else report["suggested_thresholds"]
            write_thresholds(draft_path, chosen)
    return report


def agreement_on_answers(by_task: dict, evaluate, names: list) -> dict:
    """{"tasks": {task: answers, positions, top1_agreement and top4_recall per name}, "overall": the
    position-weighted means}; ``evaluate(sequences, prompt_lengths)`` -> (positions, {name: (top-1, top-4)})."""
    tasks = [t for t in TASKS if t in by_task] + sorted(set(by_task) - set(TASKS))
    report = {"tasks": {}}
    for task in tasks:
        sequences, lengths = by_task[task]
        positions, rates = evaluate(sequences, lengths)
        report["tasks"][task] = {"answers": len(sequences), "positions": positions,
                                 "top1_agreement": {k: top1 for k, (top1, _) in rates.items()},
                                 "top4_recall": {k: top4 for k, (_, top4) in rates.items()}}
    positions = sum(r["positions"] for r in report["tasks"].values())
    report["overall"] = {metric: {k: sum(r[metric][k] * r["positions"] for r in report["tasks"].values()) / positions
                                  for k in names} for metric in ("top1_agreement", "top4_recall")}
    report["positions"] = positions
    return report


def format_task_table(title: str, report: dict, columns: dict) -> str:
    """``columns``: {name in the report: its column heading}."""
    lines = [title, f"{'task':<16}{'answers':>8}{'positions':>10}  " + "  ".join(f"{c:>13}" for c in columns.values())]
    overall = {**report["overall"], "answers": "", "positions": report["positions"]}
    for task, r in [*report["tasks"].items(), ("overall", overall)]:
        cells = "  ".join(f"{r['top1_agreement'][k]:6.1%} /{r['top4_recall'][k]:6.1%}" for k in columns)
        lines.append(f"{task:<16}{r['answers']!s:>8}{r['positions']!s:>10}  {cells}")
    return "\n".join(lines)


def exit_quality_on_answers(draft_path, answer_file, question_file=None, exits=None, conv_template=None) -> dict:
    """Per Spec-Bench task: each exit's agreement with (and top-4 recall of) the target's greedy
    tokens in an answer file, teacher-forced along those answers."""
    from sd2.paths import SPEC_BENCH_QUESTIONS
    from sd2train.preprocess import get_format

    m = load_measured(draft_path, exits=exits)
    exits, vocab_ids = m.exits, m.vocab_ids
    by_task = answer_sequences(answer_file, question_file or SPEC_BENCH_QUESTIONS, m.tokenizer,
                               get_format(conv_template, m.tokenizer))
    key = "_draft_vocab" if vocab_ids is not None else ""

    def evaluate(sequences, lengths):
        result = evaluate_exits(m.draft, m.target, sequences, lengths, exits, vocab_ids)
        return result["positions"], {k: (r[f"top1_agreement{key}"], r[f"top4_recall{key}"])
                                     for k, r in result["per_exit"].items()}

    report = {"draft": str(draft_path), "answer_file": str(answer_file), "exits": exits,
              **agreement_on_answers(by_task, evaluate, exits)}
    print(format_task_table(f"exit agreement of {draft_path} along {answer_file} (first turns, teacher-forced; "
                            f"{'draft' if vocab_ids is not None else 'full'}-vocabulary head): top-1 / top-4 per exit",
                            report, {k: f"exit {k}" for k in exits}))
    return report


@dataclass
class MeasuredHead:
    """An EAGLE head, its target (both float32) and the draft vocabulary beside the head, if any."""

    head: torch.nn.Module
    target_path: str
    target: torch.nn.Module
    tokenizer: object
    vocab_ids: torch.Tensor | None
    eagle3: bool = False  # an EAGLE-3 head (sd2train.eagle3), measured at depths 1..3


def load_measured_head(head_path, target_path=None) -> MeasuredHead:
    """The target defaults to the one the head names; a head for another target is refused."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sd2.draft_spec import DRAFT_VOCAB_FILE
    from sd2.eagle3_head import CONFIG_KEY as EAGLE3_KEY, load_eagle3_head
    from sd2.eagle_head import CONFIG_KEY, load_eagle_head

    config_file = Path(head_path, "config.json")
    if not config_file.is_file():
        raise ValueError(f"no EAGLE head at {head_path} (config.json missing)")
    config = json.loads(config_file.read_text())
    eagle3 = EAGLE3_KEY in config
    target_path = str(target_path or config.get(EAGLE3_KEY if eagle3 else CONFIG_KEY, {}).get("target") or "")
    if not target_path:
        raise ValueError(f"{head_path} names no target: pass --target")
    target = AutoModelForCausalLM.from_pretrained(target_path, dtype=torch.float32).eval()
    if eagle3:
        head = load_eagle3_head(head_path, target, torch.float32)
        return MeasuredHead(head, target_path, target, AutoTokenizer.from_pretrained(target_path), head.vocab_ids, True)
    head = load_eagle_head(head_path, target, torch.float32)
    vocab_file = Path(head_path, DRAFT_VOCAB_FILE)
    vocab_ids = torch.tensor(json.loads(vocab_file.read_text())) if vocab_file.is_file() else None
    return MeasuredHead(head, target_path, target, AutoTokenizer.from_pretrained(target_path), vocab_ids)


def eagle_quality(head_path, target_path=None, num_prompts: int = 32, new_tokens: int = 64,
                  max_prompt_tokens: int = 192, data_path=None, conv_template=None, write: bool = True,
                  heldout_fraction: float = 0.02, min_prompt_tokens: int = 0,
                  prompt_count_in_name: int | None = None) -> dict:
    """An EAGLE head's held-out report: on the draft report's prompts and positions, its depth-1
    agreement with the target's greedy token (teacher-forced with the target's true features)."""
    started = time.time()
    m = load_measured_head(head_path, target_path)
    prompts, sequences = heldout_sequences(m.target_path, m.target, m.tokenizer, conv_template, num_prompts,
                                           new_tokens, max_prompt_tokens, min_prompt_tokens, data_path,
                                           heldout_fraction)
    report = {"head": str(head_path), "target": m.target_path, "prompts": len(prompts),
              "prompt_tokens": [min_prompt_tokens, max_prompt_tokens], "new_tokens": new_tokens}
    lengths = [len(p) for p in prompts]
    if m.eagle3:  # depth 1's figures also at the top level, where EAGLE's report has them
        measured = evaluate_eagle3(m.head, m.target, sequences, lengths)
        report.update({"depth": 1, "positions": measured["positions"], **measured["per_depth"][1],
                       "per_depth": measured["per_depth"]})
    else:
        report.update({"depth": 1, **evaluate_eagle(m.head, m.target, sequences, lengths, m.vocab_ids)})
    if m.vocab_ids is not None:
        report["draft_vocab_size"] = len(m.vocab_ids)
    report["seconds"] = round(time.time() - started, 1)
    depths = ("depths 1-3: the k-th token drafted after a verification, unrolled over the head's own outputs"
              if m.eagle3 else "depth 1: the first token drafted after a verification")
    print("\n".join([f"EAGLE{'-3' if m.eagle3 else ''} head {head_path} vs {m.target_path} ({prompt_set_title(report)}; "
                     f"{depths}, teacher-forced with the target's features)",
                     *agreement_table(report.get("per_depth", {1: report}), "depth")]))
    if write:
        write_report(Path(head_path, report_name(EAGLE_REPORT_FILE, min_prompt_tokens, max_prompt_tokens,
                                                 prompt_count_in_name)), report)
    return report


def eagle_quality_on_answers(head_path, answer_file, question_file=None, target_path=None, conv_template=None) -> dict:
    """Per Spec-Bench task: an EAGLE head's depth-1 agreement along an answer file's greedy tokens
    (the draft-vocabulary head's, when the head has one, as for a draft's exits)."""
    from sd2.paths import SPEC_BENCH_QUESTIONS
    from sd2train.preprocess import get_format

    m = load_measured_head(head_path, target_path)
    by_task = answer_sequences(answer_file, question_file or SPEC_BENCH_QUESTIONS, m.tokenizer,
                               get_format(conv_template, m.tokenizer))
    key = "_draft_vocab" if m.vocab_ids is not None else ""

    depths = [1, 2, 3] if m.eagle3 else [1]

    def evaluate(sequences, lengths):
        if m.eagle3:
            result = evaluate_eagle3(m.head, m.target, sequences, lengths, tuple(depths))
            return result["positions"], {k: (r[f"top1_agreement{key}"], r[f"top4_recall{key}"])
                                         for k, r in result["per_depth"].items()}
        result = evaluate_eagle(m.head, m.target, sequences, lengths, m.vocab_ids)
        return result["positions"], {1: (result[f"top1_agreement{key}"], result[f"top4_recall{key}"])}

    report = {"head": str(head_path), "answer_file": str(answer_file),
              **agreement_on_answers(by_task, evaluate, depths)}
    print(format_task_table(f"EAGLE{'-3' if m.eagle3 else ''} head {head_path} along {answer_file} (first turns, "
                            f"teacher-forced; {'draft' if key else 'full'}-vocabulary head): top-1 / top-4 per depth",
                            report, {k: f"depth {k}" for k in depths}))
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    measured = parser.add_mutually_exclusive_group(required=True)
    measured.add_argument("--draft", help="draft checkpoint (or a target, with --layers)")
    measured.add_argument("--eagle", metavar="HEAD",
                          help="an EAGLE head (sd2train.eagle) instead: its depth-1 agreement on the same prompts "
                               "and positions (an EAGLE-3 head's at depths 1-3), written to HEAD/eagle_quality.json")
    parser.add_argument("--target", default=None,
                        help="target checkpoint (default: the one the draft's config.sd2 or the head's config names)")
    parser.add_argument("--layers", type=int, default=None, help="measure the first N layers of --draft untrained")
    parser.add_argument("--exits", default=None, help="comma-separated exits (default: the draft's)")
    add_heldout_args(parser, "exit_quality-nN.json or eagle_quality-nN.json", DEFAULT_PROMPTS)
    parser.add_argument("--update-thresholds", action="store_true",
                        help="write the suggested thresholds into the draft's config.sd2 (with --exit-costs, "
                             "the ones suggested for speed)")
    parser.add_argument("--exit-costs", default=None,
                        help="each exit's cost per draft token in target steps, comma-separated (as "
                             "scripts/benchmark_sd2.py prints them, e.g. 0.07,0.11,0.15): also suggests the "
                             "thresholds with the best estimated speed-up")
    parser.add_argument("--draft-vocab-size", type=int, default=None,
                        help="score the draft head over the first N ids of the draft vocabulary only (what "
                             "inference's --draft-vocab-size runs); written as exit_quality-vocab-N.json")
    parser.add_argument("--answer-file", default=None,
                        help="instead of held-out prompts: a float32 greedy answer file of the evaluation "
                             "harness (e.g. AR's on Spec-Bench); reports each exit's agreement per task along it")
    parser.add_argument("--question-file", default=None, help="with --answer-file (default: Spec-Bench's)")
    args = parser.parse_args(argv)
    count_in_name = count_in_report_name(args.prompts)
    if args.eagle:
        draft_only = [flag for flag, value in (("--layers", args.layers), ("--exits", args.exits),
                                               ("--exit-costs", args.exit_costs),
                                               ("--update-thresholds", args.update_thresholds),
                                               ("--draft-vocab-size", args.draft_vocab_size)) if value]
        if draft_only:
            parser.error(f"{', '.join(draft_only)}: for a draft's exits, not with --eagle")
        if args.answer_file:
            report = eagle_quality_on_answers(args.eagle, args.answer_file, args.question_file, args.target,
                                              args.conv_template)
        else:
            report = eagle_quality(args.eagle, args.target, args.prompts, args.new_tokens, args.max_prompt_tokens,
                                   args.data_path, args.conv_template, min_prompt_tokens=args.min_prompt_tokens,
                                   prompt_count_in_name=count_in_name)
        if args.output:
            write_report(Path(args.output), report)
        return
    if args.answer_file and args.draft_vocab_size:
        parser.error("--draft-vocab-size: for the held-out report, not with --answer-file")
    if args.answer_file:
        report = exit_quality_on_answers(args.draft, args.answer_file, args.question_file,
                                         parse_int_list(args.exits) if args.exits else None, args.conv_template)
        if args.output:
            write_report(Path(args.output), report)
        return
    exits = parse_int_list(args.exits) if args.exits else None
    costs = [float(x) for x in args.exit_costs.split(",")] if args.exit_costs else None
    report = exit_quality(args.draft, args.target, exits, args.layers,
                          args.prompts, args.new_tokens, args.max_prompt_tokens, args.data_path,
                          args.conv_template, update_thresholds=args.update_thresholds,
                          min_prompt_tokens=args.min_prompt_tokens, exit_costs=costs,
                          draft_vocab_size=args.draft_vocab_size, prompt_count_in_name=count_in_name)
    if args.output:
        write_report(Path(args.output), report)


if __name__ == "__main__":
    run_cli(main)
