"""Spec-Bench questions: load and validate ``question.jsonl`` (one JSON record per line)."""
from __future__ import annotations

import json
from pathlib import Path

from sd2.spec_bench import MT_BENCH_CATEGORIES, TASKS, task_of  # noqa: F401  (re-exported for the reports)


def report_tasks(categories) -> list[str]:
    """Rows of a report: Spec-Bench's tasks in their order, then any other category (a custom
    question set gets its own rows), then overall."""
    present = {task_of(c) for c in categories}
    return [t for t in TASKS if t in present] + sorted(present - set(TASKS)) + ["overall"]


class QuestionFileError(ValueError):
    """A question file that is missing or has a malformed line (the message names file and line)."""


def _check(record, where: str) -> dict:
    if not isinstance(record, dict):
        raise QuestionFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    qid = record.get("question_id")
    if isinstance(qid, bool) or not isinstance(qid, (int, str)) or qid == "":
        raise QuestionFileError(f"{where}: 'question_id' must be an integer or a non-empty string")
    if not isinstance(record.get("category"), str) or not record["category"]:
        raise QuestionFileError(f"{where}: 'category' must be a non-empty string")
    turns = record.get("turns")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise QuestionFileError(f"{where}: 'turns' must be a non-empty list of strings")
    return record


def iter_jsonl(path: Path, error: type[ValueError]):
    """("file:line", record) for each non-blank line of a jsonl file; bad JSON or bytes that are
    not UTF-8 raise ``error`` naming the file and line."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise error(f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}): "
                            "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{where}: not valid JSON ({exc.msg})") from None


def load_questions(path: str | Path, begin: int | None = None, end: int | None = None,
                   categories: list[str] | None = None) -> list[dict]:
    """Questions [begin, end) of a Spec-Bench-format jsonl, optionally only some categories/tasks.

    ``categories`` accepts category names and task names (``mt_bench`` selects its 8 categories).
    """
    path = Path(path)
    if not path.is_file():
        raise QuestionFileError(f"question file not found: {path}")
    questions, seen = [], {}
    for where, record in iter_jsonl(path, QuestionFileError):
        record = _check(record, where)
        if record["question_id"] in seen:
            raise QuestionFileError(
                f"{where}: duplicate question_id {record['question_id']!r} (first at {seen[record['question_id']]})")
        seen[record["question_id"]] = where
        questions.append(record)
    if not questions:
        raise QuestionFileError(f"{path}: no questions")
    questions = questions[begin:end]
    if categories:
        wanted = set(categories)
        known = {q["category"] for q in questions} | {task_of(q["category"]) for q in questions}
        unknown = wanted - known
        if unknown:
            raise QuestionFileError(f"{path}: unknown categories/tasks {sorted(unknown)}; known: {sorted(known)}")
        questions = [q for q in questions if q["category"] in wanted or task_of(q["category"]) in wanted]
    return questions
