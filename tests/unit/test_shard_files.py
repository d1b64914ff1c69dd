"""Sharded evaluation without Ray or a model: shard files and their folding into the answer file,
the flags that ask for workers, and the one Ray pin the install files share."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest

from evaluation.eval import EvalConfigError, add_eval_args
from evaluation.sharding import fold_shard_files, shard_files, shard_path, sharded, worker_count
from sd2.paths import REPO_ROOT

SETTINGS = {"max_new_tokens": 16, "temperature": 0.0}


def record(qid, settings=SETTINGS, **extra):
    return {"question_id": qid, "category": "qa", "answer_id": f"a{qid}", "model_id": "m",
            "choices": [{"index": 0, "turns": [f"answer {qid}"]}], "tstamp": 0.0, "settings": settings, **extra}


def write(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def ids(path):
    return [json.loads(line)["question_id"] for line in path.read_text().splitlines()]


def test_shard_files_sit_beside_the_answer_file_and_only_they_match(tmp_path):
    answers = tmp_path / "smollm2-ar-float32-temp-0.0.jsonl"
    assert shard_path(answers, 3).name == "smollm2-ar-float32-temp-0.0.shard-3.jsonl"
    for name in ("smollm2-ar-float32-temp-0.0.shard-1.jsonl", "smollm2-ar-float32-temp-0.0.shard-0.jsonl",
                 "smollm2-ar-float32-temp-0.0.shard-x.jsonl", "other.shard-0.jsonl", "smollm2-arXfloat32-temp-0.0"
                 ".shard-0.jsonl"):
        (tmp_path / name).write_text("")
    assert [p.name for p in shard_files(answers)] == ["smollm2-ar-float32-temp-0.0.shard-0.jsonl",
                                                      "smollm2-ar-float32-temp-0.0.shard-1.jsonl"]
    assert shard_files(tmp_path / "no-such-folder" / "a.jsonl") == []


def test_folding_merges_in_question_order_keeps_the_last_record_and_removes_the_shards(tmp_path):
    answers = tmp_path / "a.jsonl"
    write(answers, [record(5), record(2, error="too long")])
    write(shard_path(answers, 0), [record(2), record(9)])
    write(shard_path(answers, 1), [record(1), record(5)], tail=json.dumps(record(7))[:30])  # a torn last line
    folded = fold_shard_files(answers, "m", SETTINGS)
    assert [r["question_id"] for r in folded] == ids(answers) == [1, 2, 5, 9]
    assert "error" not in folded[1]  # the shard's later answer replaced the errored one
    assert not shard_files(answers)
    assert fold_shard_files(answers, "m", SETTINGS) == folded  # nothing left to fold: unchanged


def test_a_shard_of_other_settings_is_refused_and_nothing_is_folded(tmp_path):
    answers = tmp_path / "a.jsonl"
    write(answers, [record(1)])
    write(shard_path(answers, 0), [record(2, settings={**SETTINGS, "temperature": 0.7})])
    with pytest.raises(EvalConfigError, match="temperature: 0.7 in the file, 0.0 now"):
        fold_shard_files(answers, "m", SETTINGS)
    assert ids(answers) == [1] and shard_files(answers)


@pytest.mark.parametrize("flags, workers", [
    ([], 1), (["--num-workers", "1"], 1), (["--num-workers", "3"], 3), (["--num-gpus-total", "1"], 1),
    (["--num-gpus-total", "4"], 4),
])
def test_which_flags_ask_for_workers(flags, workers):
    args = add_eval_args(argparse.ArgumentParser()).parse_args(["--model-id", "m", *flags])
    assert worker_count(args) == workers and sharded(args) == (workers > 1)


def test_one_process_does_not_import_ray():
    """Importing the method registry (which holds the sharding hook) brings no Ray in."""
    code = "import sys, evaluation.methods; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_ray_is_pinned_once_and_installed_by_setup_and_the_eval_environment():
    tomllib = pytest.importorskip("tomllib")
    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]
    assert len(extra) == 1 and re.fullmatch(r"ray==[0-9.]+", extra[0])  # pinned, in pyproject.toml only
    assert re.search(r"^\s*EXTRAS=[a-z,]*\bray\b", (REPO_ROOT / "scripts" / "setup.sh").read_text(), re.M)
    extras = re.search(r"-e \.\[([a-z,]+)\]", (REPO_ROOT / "environment-eval.yml").read_text())
    assert extras and "ray" in extras.group(1).split(",")
