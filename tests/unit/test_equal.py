"""equal.py: per-question equality, the first differing token, extra/missing questions, --strict."""
from __future__ import annotations

from evaluation.equal import compare_files, first_difference, main

from helpers import answer_record
from helpers import write_answers as write


def answer(qid, category, turns, **extra):
    return answer_record(qid, category, turns, **extra)


SAME = "Paris is the capital of France."
A = "The quick brown fox jumps over the lazy dog."
B = "The quick brown cat jumps over the lazy dog."


def pair(tmp_path):
    f1 = write(tmp_path / "a.jsonl", [
        answer(81, "writing", [SAME, SAME]), answer(161, "translation", [A]), answer(241, "summarization", [SAME]),
        answer(321, "qa", [SAME]), answer(401, "math_reasoning", [SAME, SAME]),
    ])
    f2 = write(tmp_path / "b.jsonl", [
        answer(81, "writing", [SAME, SAME]), answer(161, "translation", [B]),
        answer(321, "qa", [], error="prompt too long"), answer(401, "math_reasoning", [SAME]),
        answer(481, "rag", [SAME]),
    ])
    return f1, f2


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2


def test_differences_located_in_characters(tmp_path):
    f1, f2 = pair(tmp_path)
    by_char = compare_files(f1, f2)
    d = by_char["differences"][161]
    assert (d["turn"], d["unit"], d["index"]) == (1, "char", A.index("fox"))
    assert "'The quick brown ' | 'fox" in d["detail"] and "| 'cat" in d["detail"]



def test_missing_extra_errored_and_missing_turns_are_all_reported(tmp_path):
    f1, f2 = pair(tmp_path)
    report = compare_files(f1, f2)
    assert report["only_in_file1"] == [241] and report["only_in_file2"] == [481]
    assert report["errors"] == {321: {"file2": "prompt too long"}}
    assert report["differences"][401]["detail"] == "turn 2 is missing from one file"
    assert set(report["differences"]) == {161, 401}
    assert report["tasks"]["mt_bench"] == {"equal": 1, "different": 0, "error": 0}
    assert report["tasks"]["overall"] == {"equal": 1, "different": 2, "error": 1}
    assert not report["all_equal"]


def test_cli_strict_exit_codes(tmp_path, capsys):
    f1, f2 = pair(tmp_path)
    assert main(["--file-path", str(tmp_path), "--jsonfile1", "a.jsonl", "--jsonfile2", "b.jsonl"]) == 0
    out = capsys.readouterr().out
    assert "question 161 (translation) differs at turn 1, char 16" in out and out.rstrip().endswith("Not Equal!")
    assert "1 question(s) only in file1: [241]" in out
    assert main(["--jsonfile1", str(f1), "--jsonfile2", str(f2), "--strict"]) == 1

    # only an extra question: still not equal under --strict
    same = write(tmp_path / "same.jsonl", [answer(81, "writing", [SAME, SAME])])
    more = write(tmp_path / "more.jsonl", [answer(81, "writing", [SAME, SAME]), answer(82, "writing", [SAME])])
    assert main(["--jsonfile1", str(same), "--jsonfile2", str(more), "--strict"]) == 1
    # an error in one file fails --strict; the same question failing in both is listed but not a difference
    failed = write(tmp_path / "failed.jsonl", [answer(81, "writing", [SAME, SAME]), answer(82, "writing", [], error="x")])
    assert main(["--jsonfile1", str(more), "--jsonfile2", str(failed), "--strict"]) == 1
    failed_too = write(tmp_path / "failed-too.jsonl", [answer(81, "writing", [SAME, SAME]),
                                                      answer(82, "writing", [], error="x")])
    assert main(["--jsonfile1", str(failed), "--jsonfile2", str(failed_too), "--strict"]) == 0
    assert "question 82: recorded with an error in file1 (x), file2 (x)" in capsys.readouterr().out
    same_too = write(tmp_path / "same-too.jsonl", [answer(81, "writing", [SAME, SAME])])
    assert main(["--jsonfile1", str(same), "--jsonfile2", str(same_too), "--strict"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("Result totally Equal!")
    assert main(["--jsonfile1", str(same), "--jsonfile2", str(tmp_path / "absent.jsonl")]) == 2


def test_token_ids_are_compared_when_both_files_have_them(tmp_path):
    """Two answers whose texts match but whose token ids differ are not equal."""
    def with_ids(qid, text, ids):
        record = answer(qid, "qa", [text])
        record["choices"][0]["token_ids"] = [ids]
        return record

    f1 = write(tmp_path / "a.jsonl", [with_ids(321, SAME, [5, 6, 7, 2]), with_ids(322, SAME, [5, 6])])
    f2 = write(tmp_path / "b.jsonl", [with_ids(321, SAME, [5, 6, 7, 9]), with_ids(322, SAME, [5, 6])])
    report = compare_files(f1, f2)
    assert report["compared_on"] == {"token ids": 2, "text": 0} and not report["all_equal"]
    assert report["differences"][321]["unit"] == "token id" and report["differences"][321]["index"] == 3
    assert main(["--jsonfile1", str(f1), "--jsonfile2", str(f2), "--strict"]) == 1
    # A file without ids (an older run, or another harness) falls back to text, and says so.
    f3 = write(tmp_path / "c.jsonl", [answer(321, "qa", [SAME]), answer(322, "qa", [SAME])])
    report = compare_files(f1, f3)
    assert report["compared_on"] == {"token ids": 0, "text": 2} and report["all_equal"]


def test_a_file_compared_with_itself_is_refused(tmp_path, capsys):
    path = write(tmp_path / "a.jsonl", [answer(1, "qa", ["x"])])
    assert main(["--jsonfile1", str(path), "--jsonfile2", str(path)]) == 2
    assert "compared with itself" in capsys.readouterr().err


def run_equal(*args):
    import subprocess
    import sys

    from sd2.paths import REPO_ROOT

    return subprocess.run([sys.executable, "-m", "evaluation.equal", *map(str, args)], cwd=REPO_ROOT / "inference",
                          capture_output=True, text=True, timeout=300)


def test_strict_tells_an_error_from_a_difference(tmp_path):
    """As processes: 1 means "not equal", 2 means no report could be made, as --help says."""
    f1, f2 = pair(tmp_path)
    assert run_equal("--jsonfile1", f1, "--jsonfile2", f2, "--strict").returncode == 1
    help_text = run_equal("--help").stdout
    assert "Exit status: 0" in help_text and "2 when no report could be made" in " ".join(help_text.split())
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b'{"question_id": 81, "category": "writing", "choices": [], "turns": ["caf\xe9"]}\n')
    missing_tokenizer = tmp_path / "no-such-model"
    for args, message in [
        (["--jsonfile1", f1, "--jsonfile2", broken], f"{broken}:1: not UTF-8 text (byte 0xe9"),
        (["--jsonfile1", f1, "--jsonfile2", f2, "--tokenizer-path", missing_tokenizer],
         f"--tokenizer-path {missing_tokenizer}: not found"),
        (["--jsonfile1", f1, "--jsonfile2", f2, "--tokenizer-path", tmp_path], "no tokenizer files"),
        (["--jsonfile1", f1, "--jsonfile2", f2, "--json", tmp_path / "absent" / "r.json"], "does not exist"),
    ]:
        done = run_equal(*args, "--strict")
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and done.stderr.count("error: ") == 1 and "Traceback" not in done.stderr
        assert "Equal" not in done.stdout  # no report
