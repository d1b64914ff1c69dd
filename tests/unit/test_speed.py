"""speed.py against hand computations on small synthetic answer files."""
from __future__ import annotations

import json
import math

import pytest

from evaluation.answers import AnswerFileError
from evaluation.speed import main, speed_report

from helpers import answer_record, write_answers


def answer(qid, category, new_tokens, wall_time, accept_lengths=None, turns=None, **extra):
    return answer_record(qid, category, turns, new_tokens, wall_time, accept_lengths, **extra)


def write(path, records):
    return str(write_answers(path, records))


@pytest.fixture
def files(tmp_path):
    method = write(tmp_path / "method.jsonl", [
        answer(81, "writing", [10, 20], [1.0, 1.0], [2, 3, 5, 4, 6, 10]),  # 30 tokens in 2 s
        answer(161, "translation", [30], [2.0], [3] * 10),  # 30 tokens in 2 s
    ])
    base = write(tmp_path / "base.jsonl", [
        answer(81, "writing", [10, 20], [3.0, 3.0]),  # 30 tokens in 6 s
        answer(161, "translation", [30], [3.0]),  # 30 tokens in 3 s
    ])
    return method, base


def test_single_run_against_hand_computation(files):
    report = speed_report([files[0]], [files[1]])
    s = {task: {k: v["mean"] for k, v in m.items()} for task, m in report["summary"].items()}
    assert list(s) == ["mt_bench", "translation", "overall"]
    # mt_bench: 15 vs 5 tok/s; translation: 15 vs 10 tok/s
    assert s["mt_bench"]["speedup"] == pytest.approx(3.0) and s["translation"]["speedup"] == pytest.approx(1.5)
    assert s["mt_bench"]["tau"] == pytest.approx(30 / 6) and s["translation"]["tau"] == pytest.approx(3.0)
    # overall, Spec-Bench's mean of per-question rates: (15 + 15) / 2 over (5 + 10) / 2
    assert s["overall"]["tok_s"] == pytest.approx(15.0) and s["overall"]["tok_s_base"] == pytest.approx(7.5)
    assert s["overall"]["speedup"] == pytest.approx(2.0)
    # total tokens / total time: 60 / 4 over 60 / 9
    assert s["overall"]["tok_s_total"] == pytest.approx(15.0) and s["overall"]["tok_s_total_base"] == pytest.approx(60 / 9)
    assert s["overall"]["speedup_total"] == pytest.approx(2.25)
    assert s["overall"]["tau"] == pytest.approx(60 / 16) and s["overall"]["tau_base"] == pytest.approx(1.0)
    assert s["overall"]["questions"] == 2 and all(v["std"] == 0 for v in report["summary"]["overall"].values())


def test_several_runs_give_mean_and_std(files, tmp_path):
    method2 = write(tmp_path / "method2.jsonl", [
        answer(81, "writing", [10, 20], [2.0, 1.0]),  # 10 tok/s
        answer(161, "translation", [30], [1.0]),  # 30 tok/s
    ])
    report = speed_report([files[0], method2], [files[1]])  # one baseline shared by both runs
    overall = report["summary"]["overall"]
    speedups = [2.0, 20 / 7.5]
    assert overall["speedup"]["mean"] == pytest.approx(sum(speedups) / 2)
    assert overall["speedup"]["std"] == pytest.approx(abs(speedups[0] - speedups[1]) / math.sqrt(2))
    with pytest.raises(AnswerFileError, match="one --base-path, or one per"):
        speed_report([files[0], method2, method2], [files[1], files[1]])


def test_questions_in_one_file_only_are_an_error_unless_allowed(files, tmp_path):
    extra = write(tmp_path / "extra.jsonl", [
        answer(81, "writing", [10, 20], [1.0, 1.0]), answer(161, "translation", [30], [2.0]),
        answer(241, "summarization", [5], [1.0]),
    ])
    with pytest.raises(AnswerFileError, match=r"1 question\(s\) only in .*extra.jsonl: \[241\]"):
        speed_report([extra], [files[1]])
    report = speed_report([extra], [files[1]], allow_subset=True)
    assert report["summary"]["overall"]["questions"]["mean"] == 2 and "summarization" not in report["summary"]
    assert any("241" in note for note in report["left_out"])


def test_errored_questions_are_reported_not_averaged(files, tmp_path):
    errored = write(tmp_path / "errored.jsonl", [
        answer(81, "writing", [10, 20], [1.0, 1.0]),
        {**answer(161, "translation", [], []), "error": "turn 1: prompt of 9000 tokens does not fit"},
    ])
    with pytest.raises(AnswerFileError, match="recorded with an error in .*errored.jsonl only: \\[161\\]"):
        speed_report([errored], [files[1]])
    report = speed_report([errored], [files[1]], allow_subset=True)
    assert list(report["summary"]) == ["mt_bench", "overall"]
    # the same question failing on both sides leaves it out of both, with a note
    copy = tmp_path / "errored-copy.jsonl"
    copy.write_text(open(errored).read())
    report = speed_report([errored], [str(copy)])
    assert list(report["summary"]) == ["mt_bench", "overall"]
    assert report["left_out"] == ["1 question(s) recorded with an error in both files, left out: [161]"]


def test_malformed_and_duplicate_lines_are_named(files, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(answer(81, "writing", [1], [1.0])) + "\n{nope\n")
    with pytest.raises(AnswerFileError, match="bad.jsonl:2: not valid JSON"):
        speed_report([str(bad)], [files[1]])
    dup = write(tmp_path / "dup.jsonl", [answer(81, "writing", [1], [1.0])] * 2)
    with pytest.raises(AnswerFileError, match="dup.jsonl:2: question 81 answered twice"):
        speed_report([dup], [files[1]])
    with pytest.raises(AnswerFileError, match="not found"):
        speed_report([str(tmp_path / "absent.jsonl")], [files[1]])


def test_cli_table_and_json(files, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["--file-path", files[0], "--base-path", files[1], "--json", str(out)]) == 0
    table = capsys.readouterr().out
    overall_row = next(line for line in table.splitlines() if line.startswith("overall"))
    assert overall_row.split()[1:4] == ["2", "2.000", "2.250"]
    assert json.loads(out.read_text())["summary"]["translation"]["speedup"]["mean"] == pytest.approx(1.5)
    assert main(["--file-path", files[0], "--base-path", str(tmp_path / "absent.jsonl")]) == 2


def test_equal_answers_with_different_token_counts_are_flagged(tmp_path, capsys):
    method = write(tmp_path / "method.jsonl", [answer(81, "writing", [10], [1.0], turns=["same"]),
                                               answer(82, "writing", [10], [1.0], turns=["one"])])
    base = write(tmp_path / "base.jsonl", [answer(81, "writing", [12], [1.0], turns=["same"]),
                                           answer(82, "writing", [12], [1.0], turns=["other"])])
    report = speed_report([method], [base])
    assert report["token_count_mismatches"] == ["question 81: equal answers report new_tokens [10] vs [12]"]
    assert main(["--file-path", method, "--base-path", base]) == 0
    assert "warning: question 81" in capsys.readouterr().err


def test_a_file_compared_with_itself_or_mixing_model_ids_is_refused(files, tmp_path, capsys):
    assert main(["--file-path", files[0], "--base-path", files[0]]) == 2
    assert "compared with itself" in capsys.readouterr().err
    mixed = write(tmp_path / "mixed.jsonl", [answer(81, "writing", [10], [1.0]),
                                            {**answer(161, "translation", [30], [2.0]), "model_id": "other"}])
    assert main(["--file-path", mixed, "--base-path", files[1]]) == 2
    assert "mixes answers of several model_ids ['m', 'other']" in capsys.readouterr().err


def test_a_category_outside_spec_bench_gets_its_own_row(files, tmp_path):
    method = write(tmp_path / "m.jsonl", [answer(1, "poetry", [10], [1.0]), answer(161, "translation", [30], [2.0])])
    base = write(tmp_path / "b.jsonl", [answer(1, "poetry", [10], [2.0]), answer(161, "translation", [30], [3.0])])
    summary = speed_report([method], [base])["summary"]
    assert list(summary) == ["translation", "poetry", "overall"]
    assert summary["poetry"]["speedup"]["mean"] == pytest.approx(2.0)
    assert summary["overall"]["questions"]["mean"] == 2


def run_speed(*args):
    import subprocess
    import sys

    from sd2.paths import REPO_ROOT

    return subprocess.run([sys.executable, "-m", "evaluation.speed", *map(str, args)], cwd=REPO_ROOT / "inference",
                          capture_output=True, text=True, timeout=300)


def test_bad_paths_are_errors_before_any_report(files, tmp_path):
    """As processes: a wrong --tokenizer-path says the path does not exist (not "Repo id must..."),
    and --json into a missing folder fails before the table is printed."""
    missing = tmp_path / "no-such-model"
    for args, message in [
        (["--tokenizer-path", missing], f"--tokenizer-path {missing}: not found"),
        (["--tokenizer-path", "org/not-a-local-folder"], "--tokenizer-path org/not-a-local-folder: not found"),
        (["--json", tmp_path / "absent" / "r.json"], f"--json {tmp_path / 'absent' / 'r.json'}: the folder"),
    ]:
        done = run_speed("--file-path", files[0], "--base-path", files[1], *args)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and done.stderr.count("error: ") == 1 and "Traceback" not in done.stderr
        assert "Repo id" not in done.stderr and "overall" not in done.stdout


SETTINGS = {"model_fingerprint": "a1b2", "max_new_tokens": 16, "temperature": 0.0, "top_p": 1.0, "dtype": "float32",
            "device": "cpu", "conv_template": None, "drafter_fingerprint": "d0"}


def with_settings(records, **changes):
    return [{**r, "settings": {**SETTINGS, **changes}} for r in records]


def two_questions(wall_time=(1.0, 2.0)):
    return [answer(81, "writing", [10], [wall_time[0]]), answer(161, "translation", [30], [wall_time[1]])]


@pytest.mark.parametrize("change, named", [
    ({"max_new_tokens": 8}, "max_new_tokens: 16 in"),
    ({"model_fingerprint": "ffff"}, 'model_fingerprint: "a1b2" in'),
    ({"temperature": 0.7}, "temperature: 0.0 in"),
    ({"device": "cuda"}, 'device: "cpu" in'),
])
def test_files_made_under_other_settings_are_refused(tmp_path, change, named):
    method = write(tmp_path / "method.jsonl", with_settings(two_questions()))
    base = write(tmp_path / "base.jsonl", with_settings(two_questions((2.0, 4.0)), drafter_fingerprint=None, **change))
    done = run_speed("--file-path", method, "--base-path", base)
    assert done.returncode == 2 and "were not made under the same settings" in done.stderr, done.stderr
    assert named in done.stderr and "--allow-other-settings" in done.stderr and "overall" not in done.stdout
    assert "drafter_fingerprint" not in done.stderr  # a method's own settings may differ
    allowed = run_speed("--file-path", method, "--base-path", base, "--allow-other-settings")
    assert allowed.returncode == 0 and f"warning: {named}" in allowed.stderr
    assert next(line for line in allowed.stdout.splitlines() if line.startswith("overall")).split()[2] == "2.000"


def test_same_settings_or_none_recorded_compare(tmp_path):
    method = write(tmp_path / "method.jsonl", with_settings(two_questions()))
    base = write(tmp_path / "base.jsonl", with_settings(two_questions((2.0, 4.0)), drafter_fingerprint=None))
    assert speed_report([method], [base])["summary"]["overall"]["speedup"]["mean"] == pytest.approx(2.0)
    spec_bench = write(tmp_path / "spec-bench.jsonl", two_questions((2.0, 4.0)))  # another harness: no settings
    assert speed_report([method], [spec_bench])["other_settings"] == []


def test_another_question_under_the_same_id_is_refused(tmp_path):
    method = write(tmp_path / "method.jsonl", [{**r, "question_fingerprint": f"q{r['question_id']}"} for r in two_questions()])
    base = write(tmp_path / "base.jsonl", [{**r, "question_fingerprint": "other" if r["question_id"] == 81 else "q161"}
                                           for r in two_questions()])
    with pytest.raises(AnswerFileError, match=r"1 question id\(s\) hold another question \(question_fingerprint differs\): \[81\]"):
        speed_report([method], [base])


def test_tasks_come_from_the_baselines_categories(tmp_path):
    method = write(tmp_path / "method.jsonl", [answer(81, "qa", [10], [1.0]), answer(161, "translation", [30], [1.0])])
    base = write(tmp_path / "base.jsonl", [answer(81, "writing", [10], [2.0]), answer(161, "translation", [30], [2.0])])
    with pytest.raises(AnswerFileError, match=r"category differs\): \[81\]"):
        speed_report([method], [base])
    report = speed_report([method], [base], allow_other_settings=True)
    assert list(report["summary"]) == ["mt_bench", "translation", "overall"]  # writing is MT-bench's, not qa


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, "1.0"])
def test_a_wall_time_that_is_not_seconds_names_its_record(tmp_path, bad):
    method = write(tmp_path / "method.jsonl", [answer(81, "writing", [10, 5], [1.0, bad]),
                                               answer(161, "translation", [30], [1.0])])
    base = write(tmp_path / "base.jsonl", two_questions())
    done = run_speed("--file-path", method, "--base-path", base)
    assert done.returncode == 2, done.stderr
    assert f"{method}: question 81: wall_time [1.0, {bad!r}] is not a list of finite, non-negative seconds" in done.stderr
    assert "nan" not in done.stdout and "overall" not in done.stdout


def test_the_json_report_is_standard_json(tmp_path):
    no_steps = answer(81, "writing", [10], [1.0])
    no_steps["choices"][0]["accept_lengths"] = []  # tau over nothing
    method = write(tmp_path / "method.jsonl", [no_steps])
    base = write(tmp_path / "base.jsonl", [answer(81, "writing", [10], [2.0])])
    done = run_speed("--file-path", method, "--base-path", base, "--json", "-")
    assert done.returncode == 0, done.stderr

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    assert json.loads(done.stdout, parse_constant=refuse)["summary"]["overall"]["tau"]["mean"] is None
