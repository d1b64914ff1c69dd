"""Speed of a method's answers against a baseline's, per Spec-Bench task.

    python evaluation/speed.py --file-path METHOD.jsonl --base-path BASELINE.jsonl
    python evaluation/speed.py --file-path run1/m.jsonl run2/m.jsonl --base-path run1/b.jsonl run2/b.jsonl --json out.json

Per question: tokens = sum of ``new_tokens`` over turns, time = sum of ``wall_time``. Per task
(mt_bench = the 8 MT-bench categories, translation, summarization, qa, math_reasoning, rag, overall):

- ``tok/s``: Spec-Bench's figure, the mean over questions of tokens/time;
- ``tok/s (total)``: total tokens / total time, which weighs long answers by their length;
- ``speed-up``: method tok/s / baseline tok/s, for both figures;
- ``tau``: the mean accepted tokens per target pass, over all decoding steps.

Tokens are counted the same way on both sides: from ``new_tokens``, or, with
``--tokenizer-path``, by tokenising both sides' answer texts. Several runs (several
``--file-path``, with one ``--base-path`` each or one shared) give mean +- std over runs.
Questions answered in only one file stop the report unless ``--allow-subset``, which compares
the questions both answered and lists the rest; questions recorded with an ``error`` in both files
(say, a prompt longer than the context) are left out of both sides and listed. Tasks come from the
baseline's categories.

A speed-up only means something over the same work: the two files must record the same target
(its fingerprint), new-token limit, sampling, dtype, device and template (``COMPARED_SETTINGS``)
and, where recorded, the same question for each id; otherwise the report stops, naming what
differs, unless ``--allow-other-settings`` (then each difference is printed as a warning).
A ``wall_time`` that is not a finite, non-negative number stops it too.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from evaluation.answers import AnswerFileError, check_json_destination, finite_or_null, load_pair
from evaluation.checkpoints import load_tokenizer
from evaluation.errors import EvalConfigError
from evaluation.questions import report_tasks, task_of


def split_errors(records: dict) -> tuple[dict, list]:
    """(answered records, ids recorded with an error)."""
    ok = {q: r for q, r in records.items() if "error" not in r}
    return ok, sorted((q for q in records if q not in ok), key=str)


def common_questions(method: dict, base: dict, allow_subset: bool, names: tuple[str, str]) -> tuple[list, list[str]]:
    """Ids both files answered, and notes on everything left out.

    A question recorded with an error in both files (e.g. a prompt longer than the context) is
    left out of both sides with a note; one answered by one side only is an error unless allow_subset.
    """
    (m_ok, m_err), (b_ok, b_err) = split_errors(method), split_errors(base)
    m_err, b_err = set(m_err), set(b_err)
    one_sided = [(f"only in {names[0]}", set(method) - set(base)),
                 (f"only in {names[1]}", set(base) - set(method)),
                 (f"recorded with an error in {names[0]} only", (m_err - b_err) & set(base)),
                 (f"recorded with an error in {names[1]} only", (b_err - m_err) & set(method))]
    notes = [f"{len(ids)} question(s) {label}: {sorted(ids, key=str)[:20]}" for label, ids in one_sided if ids]
    if notes and not allow_subset:
        raise AnswerFileError("the files do not cover the same answered questions (--allow-subset compares "
                              "the common ones):\n  " + "\n  ".join(notes))
    if m_err & b_err:
        notes.append(f"{len(m_err & b_err)} question(s) recorded with an error in both files, left out: "
                     f"{sorted(m_err & b_err, key=str)[:20]}")
    common = sorted(set(m_ok) & set(b_ok), key=str)
    if not common:
        raise AnswerFileError(f"{names[0]} and {names[1]} have no answered question in common")
    return common, notes


def token_counter(tokenizer_path: str | None):
    """record -> tokens per question: new_tokens, or the answer texts re-tokenised (both sides alike)."""
    if not tokenizer_path:
        return lambda record: sum(record["choices"][0]["new_tokens"])
    tokenizer = load_tokenizer(tokenizer_path, "--tokenizer-path")
    return lambda record: sum(len(tokenizer(t, add_special_tokens=False).input_ids)
                              for t in record["choices"][0]["turns"])


@dataclass
class Side:
    """One answer file's figures over a set of questions."""

    rate_mean: float  # mean over questions of tokens/time (Spec-Bench)
    rate_total: float  # total tokens / total time
    tau: float  # mean accept length
    tokens: int
    time: float


def measure(records: dict, qids: list, count_tokens, name: str = "the answers") -> Side:
    rates, tokens, seconds, accepts = [], 0, 0.0, []
    for q in qids:
        choice = records[q]["choices"][0]
        times = choice["wall_time"]
        if not isinstance(times, list) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0 for x in times):
            raise AnswerFileError(f"{name}: question {q!r}: wall_time {times!r} is not a list of finite, non-negative "
                                  "seconds (a damaged record: rerun the question)")
        n, t = count_tokens(records[q]), sum(times)
        if t <= 0:
            raise AnswerFileError(f"{name}: question {q!r}: wall_time sums to {t}")
        rates.append(n / t)
        tokens += n
        seconds += t
        accepts.extend(choice["accept_lengths"])
    tau = sum(accepts) / len(accepts) if accepts else float("nan")
    return Side(sum(rates) / len(rates), tokens / seconds, tau, tokens, seconds)


def task_questions(records: dict, qids: list, task: str) -> list:
    if task == "overall":
        return qids
    return [q for q in qids if task_of(records[q]["category"]) == task]


def compare_run(method: dict, base: dict, qids: list, count_tokens, names: tuple[str, str] = ("method", "baseline")) -> dict:
    """task -> figures for one (method, baseline) pair, tasks by the baseline's categories; tasks
    with no question are left out."""
    report = {}
    for task in report_tasks(base[q]["category"] for q in qids):
        ids = task_questions(base, qids, task)
        if not ids:
            continue
        m, b = measure(method, ids, count_tokens, names[0]), measure(base, ids, count_tokens, names[1])
        report[task] = {
            "questions": len(ids), "speedup": m.rate_mean / b.rate_mean, "speedup_total": m.rate_total / b.rate_total,
            "tau": m.tau, "tau_base": b.tau, "tok_s": m.rate_mean, "tok_s_base": b.rate_mean,
            "tok_s_total": m.rate_total, "tok_s_total_base": b.rate_total,
            "tokens": m.tokens, "tokens_base": b.tokens, "time": m.time, "time_base": b.time,
        }
    return report


def summarize(runs: list[dict]) -> dict:
    """task -> metric -> {"mean", "std"} over runs (std: sample std, 0 for a single run)."""
    summary = {}
    for task in dict.fromkeys(t for r in runs for t in r):
        per_run = [r[task] for r in runs if task in r]
        if not per_run:
            continue
        if len(per_run) != len(runs):
            raise AnswerFileError(f"task {task} is missing from some runs")
        summary[task] = {}
        for metric in per_run[0]:
            values = [r[metric] for r in per_run]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[task][metric] = {"mean": statistics.fmean(values), "std": std}
    return summary


COLUMNS = (("n", "questions", "{:.0f}"), ("speed-up", "speedup", "{:.3f}"), ("speed-up (total)", "speedup_total", "{:.3f}"),
           ("tau", "tau", "{:.3f}"), ("tok/s", "tok_s", "{:.2f}"), ("tok/s base", "tok_s_base", "{:.2f}"),
           ("tok/s total", "tok_s_total", "{:.2f}"), ("tok/s total base", "tok_s_total_base", "{:.2f}"))


def format_table(summary: dict, runs: int) -> str:
    def cell(value, fmt, key):
        text = fmt.format(value["mean"])
        return text + (" ± " + fmt.format(value["std"]) if runs > 1 and key != "questions" else "")

    rows = [["task", *(c[0] for c in COLUMNS)]]
    for task, metrics in summary.items():
        rows.append([task, *(cell(metrics[key], fmt, key) for _, key, fmt in COLUMNS)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# The settings that make two runs the same work: the target, how many tokens, how they are drawn,
# the numbers' precision, the hardware and the prompts. A method's own flags differ by design.
COMPARED_SETTINGS = ("model_fingerprint", "max_new_tokens", "temperature", "top_p", "dtype", "device", "conv_template")


def recorded_settings(records: dict) -> dict:
    """setting -> the values the file's records hold (a resumed file holds one each)."""
    values = {}
    for record in records.values():
        for key in COMPARED_SETTINGS:
            if key in (record.get("settings") or {}):
                values.setdefault(key, set()).add(json.dumps(record["settings"][key]))
    return values


def setting_differences(method: dict, base: dict, qids: list, names: tuple[str, str]) -> list[str]:
    """What makes the two files' figures incomparable, one line each: recorded settings that
    differ, a question id that holds another question (fingerprints, where both record them) or
    another category."""
    diffs = []
    m, b = recorded_settings(method), recorded_settings(base)
    for key in COMPARED_SETTINGS:
        if key in m and key in b and m[key] != b[key]:
            diffs.append(f"{key}: {', '.join(sorted(m[key]))} in {names[0]}, {', '.join(sorted(b[key]))} in {names[1]}")
    for kind in ("question_fingerprint", "category"):
        other = [q for q in qids if kind in method[q] and kind in base[q] and method[q][kind] != base[q][kind]]
        if other:
            diffs.append(f"{len(other)} question id(s) hold another question ({kind} differs): {other[:10]}")
    return diffs


def token_count_mismatches(method: dict, base: dict, qids: list) -> list[str]:
    """Questions whose answers are equal (same texts and, where recorded, token ids) but whose
    ``new_tokens`` differ: one side counts tokens wrongly, and the speed ratio with it."""
    notes = []
    for qid in qids:
        a, b = method[qid]["choices"][0], base[qid]["choices"][0]
        ids_equal = "token_ids" not in a or "token_ids" not in b or a["token_ids"] == b["token_ids"]
        if a["turns"] == b["turns"] and ids_equal and a["new_tokens"] != b["new_tokens"]:
            notes.append(f"question {qid}: equal answers report new_tokens {a['new_tokens']} vs {b['new_tokens']}")
    return notes


def speed_report(file_paths: list[str], base_paths: list[str], tokenizer_path: str | None = None,
                 allow_subset: bool = False, allow_other_settings: bool = False) -> dict:
    if len(base_paths) not in (1, len(file_paths)):
        raise AnswerFileError(f"give one --base-path, or one per --file-path ({len(file_paths)}), not {len(base_paths)}")
    pairs = list(zip(file_paths, base_paths if len(base_paths) > 1 else base_paths * len(file_paths)))
    count_tokens = token_counter(tokenizer_path)
    runs, notes, pair_notes, mismatches, other_settings = [], [], [], [], []
    for file_path, base_path in pairs:
        method, base, about_pair = load_pair(file_path, base_path)
        qids, left_out = common_questions(method, base, allow_subset, (file_path, base_path))
        diffs = setting_differences(method, base, qids, (file_path, base_path))
        if diffs and not allow_other_settings:
            raise AnswerFileError(f"{file_path} and {base_path} were not made under the same settings, so their speeds "
                                  "do not compare (--allow-other-settings reports them anyway):\n  " + "\n  ".join(diffs))
        other_settings.extend(diffs)
        notes.extend(left_out)
        pair_notes.extend(about_pair)
        mismatches.extend(token_count_mismatches(method, base, qids))
        runs.append(compare_run(method, base, qids, count_tokens, (file_path, base_path)))
    return {"files": [p[0] for p in pairs], "bases": [p[1] for p in pairs],
            "tokens_from": tokenizer_path or "new_tokens", "left_out": notes, "notes": pair_notes,
            "token_count_mismatches": mismatches, "other_settings": other_settings,
            "runs": runs, "summary": summarize(runs)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file-path", nargs="+", required=True, help="the method's answer file(s), one per run")
    parser.add_argument("--base-path", nargs="+", required=True, help="the baseline's answer file(s): one, or one per run")
    parser.add_argument("--tokenizer-path", default=None,
                        help="count tokens by tokenising both sides' texts (default: the records' new_tokens)")
    parser.add_argument("--allow-subset", action="store_true",
                        help="compare the questions both files answered; list the others instead of failing")
    parser.add_argument("--allow-other-settings", action="store_true",
                        help="report files made under other settings (target, new-token limit, sampling, dtype, "
                             "device, template) or holding other questions, with a warning for each difference")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON ('-': stdout)")
    args = parser.parse_args(argv)
    try:
        check_json_destination(args.json)
        report = speed_report(args.file_path, args.base_path, args.tokenizer_path, args.allow_subset,
                              args.allow_other_settings)
    except (AnswerFileError, EvalConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in report["notes"]:
        print(f"note: {note}", file=sys.stderr)
    for note in report["left_out"]:
        print(f"left out: {note}", file=sys.stderr)
    for note in report["token_count_mismatches"] + report["other_settings"]:
        print(f"warning: {note}", file=sys.stderr)
    if args.json == "-":
        print(json.dumps(finite_or_null(report), indent=2, allow_nan=False))
        return 0
    runs = len(report["runs"])
    print(f"method: {', '.join(report['files'])}\nbaseline: {', '.join(report['bases'])}\n"
          f"tokens from: {report['tokens_from']}; {runs} run(s){' (mean ± std)' if runs > 1 else ''}\n")
    print(format_table(report["summary"], runs))
    if args.json:
        Path(args.json).write_text(json.dumps(finite_or_null(report), indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
