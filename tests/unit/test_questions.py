"""Spec-Bench question loading and validation."""
import json

import pytest

from evaluation.questions import TASKS, QuestionFileError, load_questions, task_of
from sd2.paths import SPEC_BENCH_QUESTIONS


def test_spec_bench_has_480_questions_in_six_tasks():
    questions = load_questions(SPEC_BENCH_QUESTIONS)
    assert len(questions) == 480
    counts = {}
    for q in questions:
        counts[task_of(q["category"])] = counts.get(task_of(q["category"]), 0) + 1
    assert counts == {task: 80 for task in TASKS}
    assert all(len(q["turns"]) == 2 for q in questions if task_of(q["category"]) == "mt_bench")


def test_categories_select_tasks_and_ranges():
    qs = load_questions(SPEC_BENCH_QUESTIONS, categories=["mt_bench", "rag"])
    assert {task_of(q["category"]) for q in qs} == {"mt_bench", "rag"} and len(qs) == 160
    assert [q["question_id"] for q in load_questions(SPEC_BENCH_QUESTIONS, 0, 3)] == [81, 82, 83]
    with pytest.raises(QuestionFileError, match="unknown categories"):
        load_questions(SPEC_BENCH_QUESTIONS, categories=["poetry"])


@pytest.mark.parametrize("bad_line, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"category": "qa", "turns": ["hi"]}), "question_id"),
    (json.dumps({"question_id": 7, "category": "qa", "turns": []}), "turns"),
    (json.dumps({"question_id": 7, "turns": ["hi"]}), "category"),
    (json.dumps([1, 2]), "JSON object"),
])
def test_malformed_line_is_named_with_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "q.jsonl"
    good = json.dumps({"question_id": 1, "category": "qa", "turns": ["What?"]})
    path.write_text(good + "\n" + bad_line + "\n")
    with pytest.raises(QuestionFileError, match=f"q.jsonl:2: .*{message}"):
        load_questions(path)


def test_duplicate_ids_and_missing_file(tmp_path):
    path = tmp_path / "q.jsonl"
    line = json.dumps({"question_id": 1, "category": "qa", "turns": ["What?"]})
    path.write_text(line + "\n" + line + "\n")
    with pytest.raises(QuestionFileError, match="q.jsonl:2: duplicate question_id"):
        load_questions(path)
    with pytest.raises(QuestionFileError, match="not found"):
        load_questions(tmp_path / "absent.jsonl")
