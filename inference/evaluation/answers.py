"""Spec-Bench answer files: the record, reading them (strictly for reports, leniently with repair
for a run that resumes), appending, the final reorder, and the settings a resumed run must share.

One JSON line per question, Spec-Bench's schema plus ``stats``, ``token_ids`` and ``settings``
(a question that could not be answered carries an ``error`` field instead of being dropped)::

    {"question_id", "category", "answer_id", "model_id", "question_fingerprint",
     "choices": [{"index": 0, "turns": [str], "decoding_steps": [int], "new_tokens": [int],
                  "wall_time": [float], "accept_lengths": [int], "stats": [dict], "token_ids": [[int]]}],
     "tstamp", "settings": dict, ["error": str]}
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path

from evaluation.questions import iter_jsonl
from sd2.file_lock import atomic_writer

REQUIRED = ("question_id", "category", "choices")
REQUIRED_CHOICE = ("turns", "new_tokens", "wall_time", "accept_lengths")


class AnswerFileError(ValueError):
    """An answer file that is missing, malformed, or does not fit the run or report using it."""


def load_answer_file(path: str | Path) -> dict:
    """question_id -> record of a finished answer file, for reports: malformed lines, duplicates
    and answers of several model_ids are errors."""
    path = Path(path)
    if not path.is_file():
        raise AnswerFileError(f"answer file not found: {path}")
    records, model_ids = {}, set()
    for where, record in iter_jsonl(path, AnswerFileError):
        if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
            raise AnswerFileError(f"{where}: not an answer record (needs {', '.join(REQUIRED)})")
        choices = record["choices"]
        if "error" not in record and (not isinstance(choices, list) or not choices
                                      or any(k not in choices[0] for k in REQUIRED_CHOICE)):
            raise AnswerFileError(f"{where}: choices[0] needs {', '.join(REQUIRED_CHOICE)}")
        qid = record["question_id"]
        if qid in records:
            raise AnswerFileError(f"{where}: question {qid!r} answered twice")
        records[qid] = record
        model_ids.add(record.get("model_id"))
    if not records:
        raise AnswerFileError(f"{path}: no answers")
    if len(model_ids) > 1:
        raise AnswerFileError(f"{path} mixes answers of several model_ids {sorted(map(str, model_ids))}")
    return records


def load_pair(path1: str | Path, path2: str | Path) -> tuple[dict, dict, list[str]]:
    """Two answer files to compare, and notes for the reader; a file compared with itself is an error."""
    if Path(path1).resolve() == Path(path2).resolve():
        raise AnswerFileError(f"{path1} is compared with itself: give the method's and the baseline's files")
    a, b = load_answer_file(path1), load_answer_file(path2)
    ids = {next(iter(a.values())).get("model_id"), next(iter(b.values())).get("model_id")}
    notes = [f"both files hold answers of model_id {ids.pop()!r} (two runs of one method?)"] if len(ids) == 1 else []
    return a, b, notes


def read_answers(path: Path, repair: bool = False) -> list[dict]:
    """Records of an answer file being written, in file order.

    A torn last line (a run killed mid-write) is dropped -- and cut off the file when
    ``repair`` -- with a warning; a malformed line anywhere else is an error naming the line.
    """
    if path.is_dir():
        raise AnswerFileError(f"answer file {path} is a folder: give a file name")
    if not path.is_file():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"not UTF-8 text: byte 0x{line[exc.start]:02x} at column {exc.start + 1}") from None
            record = json.loads(line)
            if not isinstance(record, dict) or "question_id" not in record:
                raise ValueError("not an answer record (no question_id)")
        except ValueError as exc:
            torn = lineno == len(lines) and not raw.endswith(b"\n")
            if not torn:
                raise AnswerFileError(f"{path}:{lineno}: malformed answer line ({exc})") from None
            print(f"warning: {path}:{lineno}: dropping an incomplete last line (interrupted write)", file=sys.stderr)
            if repair:
                with path.open("r+b") as f:
                    f.truncate(len(raw) - len(line))
            break
        records.append(record)
    else:
        if repair and raw.strip() and not raw.endswith(b"\n"):  # complete last record, newline lost
            with path.open("ab") as f:
                f.write(b"\n")
    return records


def qid_key(qid):
    return (0, qid, "") if isinstance(qid, int) else (1, 0, str(qid))


def reorganize_answers(path: Path) -> list[dict]:
    """Sort by question_id and keep each question's last record; rewritten atomically."""
    latest = {}
    for record in read_answers(path):
        latest[record["question_id"]] = record
    records = [latest[q] for q in sorted(latest, key=qid_key)]
    with atomic_writer(path) as f:  # a temporary name of its own: concurrent rewrites never share one
        for record in records:
            f.write(answer_line(record))
    return records


def answer_line(record: dict) -> str:
    """A record as one line of standard JSON (NaN or Infinity anywhere is an error, not written)."""
    return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"


def append_answer(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(answer_line(record))
        f.flush()
        os.fsync(f.fileno())


def finite_or_null(value):
    """``value`` with every NaN or infinity replaced by None, for standard JSON (a report's tau
    over no accept lengths, say)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def check_json_destination(path: str | None) -> None:
    """A report's ``--json PATH`` can be written (checked before the report is made, not after)."""
    if path in (None, "-"):
        return
    folder = Path(path).parent
    if not folder.is_dir():
        raise AnswerFileError(f"--json {path}: the folder {folder} does not exist")
    if Path(path).is_dir():
        raise AnswerFileError(f"--json {path} is a folder: give a file name")


# ---------------------------------------------------------------- the settings of a run

def question_fingerprint(question: dict) -> str:
    """What a question is (its id, category and turns), recorded in each answer: a resumed run
    redoes an answer whose question has since changed in the question file."""
    key = {k: question.get(k) for k in ("question_id", "category", "turns")}
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def fingerprint(path: str | Path) -> str:
    """A cheap identity of a checkpoint folder or data file: its config and tokenizer files whole,
    and each weight file's name, size and first and last MiB (a retrained draft differs there)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file() and _identifies(p.name))
    for file in files:
        digest.update(file.name.encode())
        size = file.stat().st_size
        digest.update(str(size).encode())
        with file.open("rb") as f:
            if file.suffix in (".json", ".txt", ".model") or size <= 2 << 20:
                digest.update(f.read())
            else:
                digest.update(f.read(1 << 20))
                f.seek(size - (1 << 20))
                digest.update(f.read())
    return digest.hexdigest()[:16]


def _identifies(name: str) -> bool:
    """Files that make a checkpoint what it is (not logs or reports written beside it)."""
    return (name in ("config.json", "generation_config.json", "special_tokens_map.json")
            or name.startswith("tokenizer") or "vocab" in name or name.endswith((".safetensors", ".bin", ".npz")))


def settings_mismatch(recorded: dict | None, current: dict) -> list[str]:
    """What differs between a record's settings and this run's, one line per setting."""
    if recorded is None:
        return ["the answers carry no recorded settings (written by an older version)"]
    keys = sorted(set(recorded) | set(current))
    return [f"{k}: {recorded.get(k)!r} in the file, {current.get(k)!r} now" for k in keys
            if recorded.get(k) != current.get(k)]


def check_resume(path: Path, records: list[dict], model_id: str, settings: dict) -> None:
    """A run may only add to an answer file made by the same model_id with the same settings."""
    others = {r.get("model_id") for r in records} - {model_id}
    if others:
        raise AnswerFileError(f"{path} holds answers of model_id {sorted(map(str, others))}, not {model_id!r}: "
                              "use another --answer-file or --model-id")
    for record in records:
        diff = settings_mismatch(record.get("settings"), settings)
        if diff:
            raise AnswerFileError(
                f"{path} holds answers made with other settings, which a resumed run would mix with these:\n  "
                + "\n  ".join(diff) + "\nuse another --answer-file or --model-id, or delete the file to start over")
