"""Are two answer files the same, token for token? Per question, per task, and where they first differ.

    python evaluation/equal.py --file-path data/spec_bench/model_answer/ --jsonfile1 ar.jsonl --jsonfile2 sd2.jsonl
    python evaluation/equal.py --jsonfile1 path/a.jsonl --jsonfile2 path/b.jsonl --tokenizer-path MODEL --strict

For each question answered in both files, every turn's generated token ids are compared when both
files record them (``token_ids``, written by this harness); otherwise the turn's text is compared
(the report says which). Text can hide differences (two id sequences that decode alike, or that
differ after a stop string), ids cannot. The first difference is located as a token index
(answers tokenised with ``--tokenizer-path`` when only text is there) or else a character index,
with a little context from both sides. Questions in only one file, or recorded with an
``error``, are listed, never skipped silently.

Exit status: 0 when the report could be made (and, with ``--strict``, the files are equal); 1 with
``--strict`` on any difference, a missing or extra question, or an error recorded in one file only;
2 when no report could be made (a missing or malformed file, a bad flag, an unusable tokenizer).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evaluation.answers import AnswerFileError, check_json_destination, load_pair
from evaluation.checkpoints import load_tokenizer
from evaluation.errors import EvalConfigError
from evaluation.questions import report_tasks, task_of

CONTEXT = 5  # tokens (or 5 * 8 characters) shown either side of a divergence


def first_difference(a: list, b: list) -> int | None:
    """Index of the first position where two sequences differ (a prefix differs at its end), or None."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


class Splitter:
    """Turns an answer text into the units compared: tokens with a tokenizer, else characters."""

    def __init__(self, tokenizer_path: str | None):
        self.tokenizer = None
        if tokenizer_path:
            self.tokenizer = load_tokenizer(tokenizer_path, "--tokenizer-path")
        self.unit = "token" if self.tokenizer else "char"

    def locate(self, text1: str, text2: str) -> tuple[str, int, str]:
        """(unit, index, context) of the first difference between two unequal texts."""
        if self.tokenizer:
            u1, u2 = (self.tokenizer(t, add_special_tokens=False).input_ids for t in (text1, text2))
            at = first_difference(u1, u2)
            if at is not None:
                return "token", at, f"{self._around(u1, at)}  vs  {self._around(u2, at)}"
        # no tokenizer, or texts that tokenise alike (e.g. differing only in unknown characters)
        at = first_difference(text1, text2)
        return "char", at, f"{self._around(text1, at)}  vs  {self._around(text2, at)}"

    def _around(self, units, at: int) -> str:
        if isinstance(units, str):
            return repr(units[max(0, at - 8 * CONTEXT):at]) + " | " + repr(units[at:at + 8 * CONTEXT])
        decode = self.tokenizer.decode
        return repr(decode(units[max(0, at - CONTEXT):at])) + " | " + repr(decode(units[at:at + CONTEXT]))


def compare_turns(turns1: list, turns2: list, splitter: Splitter) -> dict | None:
    """None when equal; else the first differing turn and where in it the answers part. Turns are
    texts, or lists of token ids."""
    for t in range(max(len(turns1), len(turns2))):
        if t >= len(turns1) or t >= len(turns2):
            return {"turn": t + 1, "unit": None, "index": None, "detail": f"turn {t + 1} is missing from one file"}
        if turns1[t] != turns2[t]:
            if isinstance(turns1[t], list):
                at = first_difference(turns1[t], turns2[t])
                context = f"{turns1[t][max(0, at - CONTEXT):at + CONTEXT]}  vs  {turns2[t][max(0, at - CONTEXT):at + CONTEXT]}"
                return {"turn": t + 1, "unit": "token id", "index": at, "detail": f"turn {t + 1}, token id {at}: {context}"}
            unit, at, context = splitter.locate(turns1[t], turns2[t])
            return {"turn": t + 1, "unit": unit, "index": at, "detail": f"turn {t + 1}, {unit} {at}: {context}"}
    return None


def comparable_turns(choice1: dict, choice2: dict) -> tuple[str, list, list]:
    """("token ids", ids, ids) when both answers recorded them, else ("text", texts, texts)."""
    if "token_ids" in choice1 and "token_ids" in choice2:
        return "token ids", choice1["token_ids"], choice2["token_ids"]
    return "text", choice1["turns"], choice2["turns"]


def compare_files(path1: Path, path2: Path, tokenizer_path: str | None = None) -> dict:
    a, b, notes = load_pair(path1, path2)
    splitter = Splitter(tokenizer_path)
    report = {"file1": str(path1), "file2": str(path2), "unit": splitter.unit, "notes": notes,
              "only_in_file1": sorted((q for q in a if q not in b), key=str),
              "only_in_file2": sorted((q for q in b if q not in a), key=str),
              "errors": {}, "differences": {}, "tasks": {}, "compared_on": {"token ids": 0, "text": 0}}
    for qid in sorted(set(a) & set(b), key=str):
        category = a[qid]["category"]
        task = task_of(category)
        counts = report["tasks"].setdefault(task, {"equal": 0, "different": 0, "error": 0})
        errs = {name: r["error"] for name, r in (("file1", a[qid]), ("file2", b[qid])) if "error" in r}
        if errs:
            report["errors"][qid] = errs
            counts["error"] += 1
            continue
        compared_on, turns1, turns2 = comparable_turns(a[qid]["choices"][0], b[qid]["choices"][0])
        report["compared_on"][compared_on] += 1
        diff = compare_turns(turns1, turns2, splitter)
        if diff is None:
            counts["equal"] += 1
        else:
            report["differences"][qid] = {"category": category, **diff}
            counts["different"] += 1
    tasks = report["tasks"]
    tasks["overall"] = {k: sum(c[k] for c in tasks.values()) for k in ("equal", "different", "error")}
    report["tasks"] = {t: tasks[t] for t in report_tasks(t for t in tasks if t != "overall")}
    # a question both runs failed the same way (say, a prompt longer than the context) is listed, not a difference
    one_sided = [q for q, errs in report["errors"].items() if len(errs) == 1]
    report["all_equal"] = not (report["differences"] or one_sided
                               or report["only_in_file1"] or report["only_in_file2"])
    return report


def format_report(report: dict) -> str:
    lines = [f"file1: {report['file1']}", f"file2: {report['file2']}", *(f"note: {n}" for n in report["notes"]), ""]
    for qid, d in report["differences"].items():
        lines.append(f"question {qid} ({d['category']}) differs at {d['detail']}")
    for qid, errs in report["errors"].items():
        lines.append(f"question {qid}: recorded with an error in {', '.join(f'{k} ({v})' for k, v in errs.items())}")
    for key in ("only_in_file1", "only_in_file2"):
        if report[key]:
            lines.append(f"{len(report[key])} question(s) {key.replace('_', ' ')}: {report[key][:20]}")
    if len(lines) > 3:
        lines.append("")
    lines.append(f"{'task':<16}{'equal':>8}{'different':>11}{'error':>7}")
    for task, c in report["tasks"].items():
        lines.append(f"{task:<16}{c['equal']:>8}{c['different']:>11}{c['error']:>7}")
    lines.append("")
    on = report["compared_on"]
    if on["text"]:
        lines.append(f"compared on token ids: {on['token ids']} questions; on text (no token ids in one file): {on['text']}")
    else:
        lines.append(f"compared on token ids ({on['token ids']} questions)")
    lines.append("Result totally Equal!" if report["all_equal"] else "Not Equal!")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file-path", default=None, help="folder of the two files (optional: paths may be given whole)")
    parser.add_argument("--jsonfile1", required=True)
    parser.add_argument("--jsonfile2", required=True)
    parser.add_argument("--tokenizer-path", default=None, help="locate differences in tokens (default: characters)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 on any difference, a missing or extra question, or an error in one file only "
                             "(bad input exits 2 either way)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON ('-': stdout)")
    args = parser.parse_args(argv)
    folder = Path(args.file_path) if args.file_path else Path()
    try:
        check_json_destination(args.json)
        report = compare_files(folder / args.jsonfile1, folder / args.jsonfile2, args.tokenizer_path)
    except (AnswerFileError, EvalConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json == "-":
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_report(report))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 1 if args.strict and not report["all_equal"] else 0


if __name__ == "__main__":
    sys.exit(main())
