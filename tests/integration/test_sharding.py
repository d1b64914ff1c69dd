"""Sharded evaluation on Ray with CPU workers (evaluation/sharding.py) on the real default target:
two workers write the answer file one process writes, an interrupted sharded run resumes, a
question that fails is reported while every other answer is kept, and one process never imports
Ray. Each sharded run starts Ray (seconds) and two workers that each load the target."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from evaluation import inference_baseline, inference_pld
from evaluation.eval import EvalConfigError
from evaluation.sharding import shard_files, shard_path
from sd2.paths import REPO_ROOT

# 12 questions, three of each task with short prompts (the MT-bench ones have two turns)
SETTINGS = ["--model-id", "sharding-test", "--categories", "mt_bench,translation,qa,math_reasoning",
            "--questions-per-task", "3", "--max-new-tokens", "16", "--num-warmup", "0", "--dtype", "float32",
            "--temperature", "0"]
ENTRY_POINTS = {"ar": inference_baseline, "pld": inference_pld}


def argv(answer_file, *extra):
    return [*SETTINGS, "--answer-file", str(answer_file), *extra]


def lines_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def content(record: dict) -> dict:
    """A record without what differs between two runs of the same answers: its id, time stamp and timings."""
    choices = [{**{k: v for k, v in c.items() if k not in ("wall_time", "stats")},
                "stats_keys": [sorted(s) for s in c["stats"]]} for c in record["choices"]]
    return {**{k: v for k, v in record.items() if k not in ("answer_id", "tstamp")}, "choices": choices}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """AR's and PLD's answers from one process each (the second with --num-workers 1), run as a
    script runs, in a fresh interpreter that must not have imported Ray by the end."""
    folder = tmp_path_factory.mktemp("one-process")
    files = {method: folder / f"{method}.jsonl" for method in ENTRY_POINTS}
    code = ("import sys\n"
            "from evaluation import inference_baseline, inference_pld\n"
            f"inference_baseline.main({argv(files['ar'])!r})\n"
            f"inference_pld.main({argv(files['pld'], '--num-workers', '1')!r})\n"
            "assert 'ray' not in sys.modules, 'one process imported ray'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {method: lines_of(path) for method, path in files.items()}


@pytest.mark.parametrize("method", ["ar", "pld"])
def test_two_workers_write_what_one_process_writes(tmp_path, one_process, method):
    pytest.importorskip("ray")
    path = tmp_path / "answers.jsonl"
    ENTRY_POINTS[method].main(argv(path, "--num-workers", "2"))
    sharded = lines_of(path)
    assert len(sharded) == 12 and not shard_files(path)
    assert [content(r) for r in sharded] == [content(r) for r in one_process[method]]  # same order, same answers


def test_an_interrupted_sharded_run_resumes(tmp_path, one_process):
    """What an interrupted run leaves: answers folded earlier, shard files (one with a torn last
    line, one repeating an answer already folded) and an errored answer. The rerun keeps every
    finished answer, retries the errored one and answers only the missing ones."""
    pytest.importorskip("ray")
    reference = one_process["ar"]
    path = tmp_path / "answers.jsonl"
    errored = {**reference[4], "answer_id": "errored", "error": "turn 1: prompt does not fit",
               "choices": [{**reference[4]["choices"][0], "turns": [], "token_ids": []}]}
    path.write_text("".join(json.dumps(r) + "\n" for r in [*reference[:4], errored]))
    shard_path(path, 0).write_text(json.dumps(reference[1]) + "\n")
    shard_path(path, 1).write_text("".join(json.dumps(r) + "\n" for r in reference[6:9])
                                   + json.dumps(reference[9])[:40])  # killed mid-write
    kept = [r["answer_id"] for r in reference[:4] + reference[6:9]]

    inference_baseline.main(argv(path, "--num-workers", "2"))
    final = lines_of(path)
    assert [r["question_id"] for r in final] == [r["question_id"] for r in reference]  # none lost, none twice
    assert [content(r) for r in final] == [content(r) for r in reference]
    ids = [r["answer_id"] for r in final]
    assert ids[:4] + ids[6:9] == kept  # finished answers were not redone
    assert not set(ids[4:6] + ids[9:]) & ({r["answer_id"] for r in reference} | {"errored"})  # made anew
    assert not shard_files(path)


def test_a_failing_question_is_reported_and_every_other_answer_kept(tmp_path):
    """A real bad input: a question whose text holds a lone UTF-16 surrogate (a string cut inside
    a surrogate pair) passes the question file's checks but cannot be encoded as UTF-8 (its answer's
    question fingerprint is the first thing to fail). Its shard reports
    it and answers the rest; the command exits 1 naming it; a rerun answers only it."""
    pytest.importorskip("ray")
    questions = [{"question_id": i, "category": "qa", "turns": [f"Name a prime number above {10 * i}."]}
                 for i in range(1, 7)]
    question_file = tmp_path / "questions.jsonl"
    lines = [json.dumps(q) for q in questions]
    lines[1] = lines[1].replace("Name a", "Name a \\ud83d")  # question 2, the first of shard 1
    question_file.write_text("\n".join(lines) + "\n")
    path = tmp_path / "answers.jsonl"
    command = ["--model-id", "m", "--question-file", str(question_file), "--answer-file", str(path),
               "--max-new-tokens", "8", "--num-warmup", "0", "--num-workers", "2"]

    done = subprocess.run([sys.executable, "-m", "evaluation.inference_baseline", *command],
                          cwd=REPO_ROOT / "inference", capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    report = done.stderr[done.stderr.index("error: "):]
    assert report.startswith("error: 1 question(s) unanswered") and str(path) in report
    assert "question 2: UnicodeEncodeError" in report
    first = lines_of(path)
    assert [r["question_id"] for r in first] == [1, 3, 4, 5, 6]  # shard 1 went on after question 2
    assert not any("error" in r for r in first) and not shard_files(path)

    question_file.write_text(question_file.read_text().replace("\\ud83d", ""))  # the input mended
    inference_baseline.main(command)
    final = lines_of(path)
    assert [r["question_id"] for r in final] == [1, 2, 3, 4, 5, 6]
    assert [r["answer_id"] for r in final if r["question_id"] != 2] == [r["answer_id"] for r in first]


def test_sharding_without_ray_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    with pytest.raises(EvalConfigError, match=r"runs on Ray, which is not installed: pip install ray"):
        inference_baseline.main(argv(tmp_path / "a.jsonl", "--num-workers", "2"))
    assert not (tmp_path / "a.jsonl").exists()


@pytest.mark.parametrize("flags, message", [
    (["--num-workers", "0"], "--num-workers must be >= 1"),
    (["--num-gpus-per-model", "2", "--num-gpus-total", "4"], "the engine runs a model on one device"),
    (["--num-gpus-total", "2", "--num-workers", "2"], "not both"),
    (["--num-gpus-total", "2", "--device", "cpu"], "use --device cuda or auto"),
])
def test_bad_sharding_flags_fail_before_any_work(tmp_path, flags, message):
    with pytest.raises(EvalConfigError, match=message):
        inference_baseline.main(argv(tmp_path / "a.jsonl", *flags))


def test_gpu_workers_on_a_machine_without_gpus(tmp_path):
    pytest.importorskip("ray")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(EvalConfigError, match=r"--num-gpus-total 2, but the Ray cluster has 0 GPU\(s\)"):
        inference_baseline.main(argv(tmp_path / "a.jsonl", "--num-gpus-total", "2"))
    assert not (tmp_path / "a.jsonl").exists()
