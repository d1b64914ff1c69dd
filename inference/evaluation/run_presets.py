"""Answer the questions with named presets one after another, then speed and equality reports
against AR (what inference/eval.sh runs).

    python -m evaluation.run_presets --presets ar,sd2_chain,sd2_tree --questions-per-task 8 --max-new-tokens 128
    python -m evaluation.run_presets --list                  # the presets (evaluation.presets)
    python -m evaluation.run_presets --presets ar,pld --dry-run   # the commands, checked, not run

Every preset's command line is built and checked first: the registry's parser and the method's
own checks, the target folder, the question selection; a bad flag or setting ends the run with one
``error:`` line before any model loads. Each method then answers in its own process, Spec-Bench's
``python -m evaluation.inference_<method>``, into ``<answer-dir>/<model-name>-<preset>-<dtype>-temp-<T>.jsonl``
(an interrupted run resumes there). A method that fails does not stop the others: the reports
cover every one that finished, and the exit code is then 1.

Flags this script does not know (``--max-new-tokens``, ``--dtype``, ``--question-end``, ...: the
harness's, see ``python -m evaluation.inference_baseline --help``) go to every method.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from evaluation.eval import EvalConfigError, check_model_folder, check_sharding_args, run_cli, selected_questions
from evaluation.methods import REGISTRY, check_method_args, parser_for
from evaluation.presets import PRESETS, add_settings_args, find, settings_from, table
from sd2.paths import REPO_ROOT, model_name

# the Spec-Bench entry point of each registered method: evaluation/<module>.py
ENTRY_POINTS = {"ar": "inference_baseline"}
BASELINE = "ar"
HARNESS_DEFAULTS = ["--dtype", "float32"]  # before the caller's flags, which win
SET_HERE = ("--model-id", "--answer-file")  # one per preset


def entry_module(method: str) -> str:
    return ENTRY_POINTS.get(method, f"inference_{method}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # the harness's flags pass through whole
    p.add_argument("--presets", help="comma- or space-separated preset names [eval.sh: METHODS]")
    p.add_argument("--list", action="store_true", help="print the presets and exit")
    p.add_argument("--dry-run", action="store_true", help="check everything, print each method's command, run none")
    p.add_argument("--model-name", default=None,
                   help="prefix of every model-id (default: the target's short name, sd2.paths.model_name) [MODEL_NAME]")
    p.add_argument("--answer-dir", default=None,
                   help="where answer files go (default: data/<bench-name>/model_answer) [ANSWERS]")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="--cuda-graphs for every preset on the shared engine; answer files named -graphs- [CUDA_GRAPHS=1]")
    add_settings_args(p.add_argument_group("settings the presets share (evaluation.presets.Settings)"))
    return p


@dataclass
class PresetRun:
    name: str
    module: str
    argv: list[str]
    answer_file: Path

    def command(self) -> list[str]:
        return [sys.executable, "-m", f"evaluation.{self.module}", *self.argv]


def _strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """A parser that raises instead of printing usage and exiting."""
    def error(message):
        raise EvalConfigError(message)
    parser.error = error
    return parser


def parse_preset(name: str, method_flags: list[str], harness: list[str]):
    """The registered method's arguments for a preset, checked as its entry point checks them."""
    return checked_args(f"preset {name}", PRESETS[name].method, [*method_flags, *harness])


def checked_args(label: str, registered: str, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by the registered method's parser and passed through its checks (no model
    loads); a refusal is an EvalConfigError starting with ``label``."""
    method = REGISTRY[registered]
    try:
        parsed = _strict(parser_for(method)).parse_args(argv)
    except EvalConfigError as exc:  # the flags as given, to find the bad one in
        raise EvalConfigError(f"{label}: {exc} (flags: {shlex.join(argv)})") from None
    try:
        check_method_args(method, parsed)
    except ValueError as exc:  # EvalConfigError too
        raise EvalConfigError(f"{label}: {exc}") from None
    return parsed


def plan_runs(args, harness: list[str]) -> tuple[list[PresetRun], Path]:
    """Every preset's command, checked (nothing loads a model), and AR's answer file."""
    for flag in SET_HERE:
        if any(a == flag or a.startswith(flag + "=") for a in harness):
            raise EvalConfigError(f"{flag} is set per preset (use --model-name and --answer-dir)")
    if not args.presets or not args.presets.replace(",", " ").split():
        raise EvalConfigError(f"no presets given (--presets; known: {', '.join(PRESETS)})")
    names = list(dict.fromkeys(args.presets.replace(",", " ").split()))
    try:
        presets = [find(n) for n in names]
        settings = settings_from(args)
        settings.check()
    except ValueError as exc:
        raise EvalConfigError(str(exc)) from None
    harness = HARNESS_DEFAULTS + harness
    runs = []
    for p in presets:
        flags = p.argv(settings, _device(harness))
        parsed = parse_preset(p.name, flags, ["--model-id", "m", *harness])  # --model-id: parses as required
        graphs = args.cuda_graphs and p.method != "hf" and getattr(parsed, "engine", "specdec") == "specdec"
        suffix = f"{parsed.dtype}-{'graphs-' if args.cuda_graphs else ''}temp-{parsed.temperature}"
        name = args.model_name or model_name(parsed.model_path)
        model_id = f"{name}-{p.name}-{suffix}"
        answer_dir = Path(args.answer_dir) if args.answer_dir else REPO_ROOT / "data" / parsed.bench_name / "model_answer"
        answer_file = answer_dir / f"{model_id}.jsonl"
        baseline = answer_dir / f"{name}-{BASELINE}-{suffix}.jsonl"
        argv = [*flags, *(["--cuda-graphs"] if graphs else []), *harness, "--model-id", model_id,
                "--answer-file", str(answer_file)]
        parse_preset(p.name, argv, [])  # --cuda-graphs' own checks (a CUDA device)
        runs.append(PresetRun(p.name, entry_module(p.method), argv, answer_file))
    first = parse_preset(presets[0].name, runs[0].argv, [])
    check_model_folder(Path(first.model_path), "--model-path")
    check_sharding_args(first)
    selected_questions(first)  # the question file reads and selects some
    return runs, baseline


def _device(harness: list[str]) -> str:
    """--device among the harness's flags (what SD2's default draft dtype depends on)."""
    device = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    device.add_argument("--device", default="auto")
    return device.parse_known_args(harness)[0].device


def report(runs: list[PresetRun], done: list[str], base: Path, temperature: float, tokenizer_path: str) -> None:
    """speed.py and equal.py (greedy) of every finished preset against AR's answers (this run's, or
    an earlier run's of the same settings)."""
    if not base.is_file():
        print(f"no AR answers ({base}): no reports")
        return
    for run in runs:
        if run.name == BASELINE or run.name not in done:
            continue
        print(f"\n==== {run.name} vs ar: speed", flush=True)
        if subprocess.run([sys.executable, "-m", "evaluation.speed", "--file-path", str(run.answer_file),
                           "--base-path", str(base)]).returncode:
            print(f"(no speed report for {run.name})")
        if temperature == 0:  # greedy: outputs must equal AR's (float32: exactly)
            print(f"\n==== {run.name} vs ar: equality", flush=True)
            if subprocess.run([sys.executable, "-m", "evaluation.equal", "--jsonfile1", str(base),
                               "--jsonfile2", str(run.answer_file), "--tokenizer-path", tokenizer_path]).returncode:
                print(f"(no equality report for {run.name})")


def main(argv=None) -> int:
    parser = build_parser()
    args, harness = parser.parse_known_args(argv)
    if args.list:
        print(table(settings_from(args)))
        return 0
    runs, base = plan_runs(args, harness)
    if args.dry_run:
        for run in runs:
            print(shlex.join(run.command()))
        return 0
    done, failed = [], []
    for run in runs:
        print(f"== {run.name}", flush=True)
        code = subprocess.run(run.command()).returncode
        (failed.append(f"{run.name} (exit {code})") if code else done.append(run.name))
    first = parse_preset(runs[0].name, runs[0].argv, [])
    report(runs, done, base, first.temperature, first.model_path)
    if failed:
        print(f"error: preset(s) failed: {', '.join(failed)}; the reports above cover the others", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(lambda: sys.exit(main()))
