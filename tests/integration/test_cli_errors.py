"""Bad input, tried as a new user would: every case ends with one ``error:`` line naming the
problem and exit code 2, before any answer is generated (or, for a resume, before one is mixed in).

The method scripts run in-process through ``run_cli`` (what their ``__main__`` calls); two cases
run as real subprocesses to pin that wiring down. Targets and drafts are tiny random models with
the default target's tokenizer."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from evaluation import inference_baseline, inference_sd2
from evaluation.answers import AnswerFileError, check_resume
from evaluation.eval import run_cli
from sd2.paths import DEFAULT_MODEL_DIR, REPO_ROOT

from helpers import save_tiny_text_target


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny text model: the target, and (with config.sd2) a draft of the same vocabulary."""
    root = tmp_path_factory.mktemp("cli")
    target = save_tiny_text_target(root / "target", DEFAULT_MODEL_DIR)
    draft = save_tiny_text_target(root / "draft", DEFAULT_MODEL_DIR, seed=1)
    config = json.loads((draft / "config.json").read_text())
    config["sd2"] = {"exits": [1, 2], "thresholds": [0.5, 0.0]}
    (draft / "config.json").write_text(json.dumps(config))
    return target, draft


def fails(main, argv, capsys) -> str:
    """Run a script's main through run_cli; it must exit 2 with one error line. Returns that line."""
    capsys.readouterr()  # what earlier runs printed
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.count("error: ") == 1 and "Traceback" not in err, err
    return err[err.index("error: "):]


def common(tiny, tmp_path, *extra):
    return ["--model-path", str(tiny[0]), "--model-id", "m", "--answer-file", str(tmp_path / "a.jsonl"),
            "--question-end", "1", "--max-new-tokens", "4", "--num-warmup", "0", *extra]


@pytest.mark.parametrize("change, named", [
    (["--max-new-tokens", "5"], "max_new_tokens: 4 in the file, 5 now"),
    (["--temperature", "0.7"], "temperature: 0.0 in the file, 0.7 now"),
    (["--dtype", "bfloat16"], "dtype: 'float32' in the file, 'bfloat16' now"),
])
def test_a_resume_with_other_settings_is_refused(tiny, tmp_path, capsys, change, named):
    inference_baseline.main(common(tiny, tmp_path, "--question-end", "1"))
    before = (tmp_path / "a.jsonl").read_text()
    args = common(tiny, tmp_path, "--question-end", "2")
    i = args.index(change[0]) if change[0] in args else None
    if i is not None:
        args[i + 1] = change[1]
    else:
        args += change
    message = fails(inference_baseline.main, args, capsys)
    assert "other settings" in message and named in message
    assert (tmp_path / "a.jsonl").read_text() == before  # nothing added
    inference_baseline.main(common(tiny, tmp_path, "--question-end", "2"))  # the same settings resume
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 2


def test_a_resume_with_another_draft_is_refused(tiny, tmp_path):
    """Drafts are told apart by what their folder holds, not by their path."""
    from evaluation.eval import run_settings
    from evaluation.methods import REGISTRY, parser_for

    parser = parser_for(REGISTRY["sd2"])
    first = run_settings(parser.parse_args(["--model-id", "m", "--drafter-path", str(tiny[1])]))
    other = run_settings(parser.parse_args(["--model-id", "m", "--drafter-path", str(tiny[0])]))
    assert first["drafter_fingerprint"] != other["drafter_fingerprint"]
    record = {"question_id": 1, "model_id": "m", "settings": first}
    check_resume(tmp_path / "a.jsonl", [record], "m", first)
    with pytest.raises(AnswerFileError, match="drafter_fingerprint"):
        check_resume(tmp_path / "a.jsonl", [record], "m", other)
    with pytest.raises(AnswerFileError, match="no recorded settings"):
        check_resume(tmp_path / "a.jsonl", [{"question_id": 1, "model_id": "m"}], "m", first)


def test_a_question_range_that_selects_nothing(tiny, tmp_path, capsys):
    message = fails(inference_baseline.main, common(tiny, tmp_path, "--question-begin", "1000", "--question-end",
                                                    "1001"), capsys)
    assert "no questions selected" in message and "--question-begin 1000" in message


def test_an_answer_file_that_is_a_folder(tiny, tmp_path, capsys):
    args = common(tiny, tmp_path)
    args[args.index("--answer-file") + 1] = str(tmp_path)
    assert "is a folder" in fails(inference_baseline.main, args, capsys)


@pytest.mark.parametrize("which, message", [
    ("missing", "not found"),
    ("empty folder", "not a model folder (no config.json)"),
])
def test_a_wrong_model_path_says_what_is_wrong(tiny, tmp_path, capsys, which, message):
    path = tmp_path / "nowhere" if which == "missing" else tmp_path
    args = common(tiny, tmp_path)
    args[args.index("--model-path") + 1] = str(path)
    assert f"--model-path {path}: {message}" in fails(inference_baseline.main, args, capsys)


def test_sd2_bad_draft_input(tiny, tmp_path, capsys):
    target, draft = tiny
    sd2 = inference_sd2.main
    assert "--drafter-path" in fails(sd2, common(tiny, tmp_path, "--drafter-path", str(tmp_path / "x")), capsys)
    assert "draft_vocab_size must be >= 0" in fails(
        sd2, common(tiny, tmp_path, "--drafter-path", str(draft), "--draft-vocab-size", "-5"), capsys)
    broken = tmp_path / "draft-without-vocab"
    broken.mkdir()
    for f in draft.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    config = json.loads((draft / "config.json").read_text())
    config["sd2"]["draft_vocab_file"] = "draft_vocab.json"
    (broken / "config.json").write_text(json.dumps(config))
    assert "draft_vocab.json, which does not exist" in fails(
        sd2, common(tiny, tmp_path, "--drafter-path", str(broken)), capsys)
    assert "exit 3 is deeper than the draft" in fails(
        sd2, common(tiny, tmp_path, "--drafter-path", str(draft), "--submodels", "1,3", "--thresholds", "0.5,0"), capsys)
    adapted = tmp_path / "draft-with-exit-adapters"
    adapted.mkdir()
    for f in draft.iterdir():
        (adapted / f.name).write_bytes(f.read_bytes())
    config = json.loads((draft / "config.json").read_text())
    config["sd2"]["exit_adapters"] = True
    (adapted / "config.json").write_text(json.dumps(config))
    assert "says the draft has exit adapters, but" in fails(
        sd2, common(tiny, tmp_path, "--drafter-path", str(adapted)), capsys)
    (adapted / "exit_adapters.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": ")  # cut off
    damaged = fails(sd2, common(tiny, tmp_path, "--drafter-path", str(adapted)), capsys)
    assert "exit_adapters.safetensors" in damaged and "does not exist" not in damaged, damaged


def test_the_scripts_exit_2_with_one_error_line_as_subprocesses(tiny, tmp_path):
    for module in ("evaluation.inference_baseline", "evaluation.inference_hf"):
        done = subprocess.run([sys.executable, "-m", module, *common(tiny, tmp_path, "--question-begin", "1000")],
                              cwd=REPO_ROOT / "inference", capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.strip().splitlines()[-1].startswith("error: no questions selected")
        assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- as a new user runs them: real processes

def cli(module: str, args: list[str], code: int = 2) -> str:
    """Run ``python -m evaluation.<module> args`` from inference/; it must exit ``code`` (2: bad input)
    with one ``error:`` line and no traceback. Returns stderr from that line on."""
    done = subprocess.run([sys.executable, "-m", f"evaluation.{module}", *args], cwd=REPO_ROOT / "inference",
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == code, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.count("error: ") == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stderr[done.stderr.index("error: "):]


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "nan"], "--temperature must be a finite number >= 0 (0: greedy), got nan"),
    (["--temperature", "inf"], "--temperature must be a finite number >= 0 (0: greedy), got inf"),
    (["--top-p", "nan"], "--top-p must be in (0, 1], got nan"),
    (["--seed", str(10**23)], f"--seed must be a whole number in [0, {2**32 - 1}], got {10**23}"),
    (["--seed", "1e23"], "argument --seed: invalid int value: '1e23'"),
    (["--question-begin", "-1"], "--question-begin must be >= 0 (an index into the question file), got -1"),
    (["--question-end", "-2"], "--question-end must be >= 0"),
])
def test_bad_numbers_fail_before_the_model_loads(tiny, tmp_path, capsys, flags, message):
    assert message in fails(inference_baseline.main, common(tiny, tmp_path, *flags), capsys)
    assert not (tmp_path / "a.jsonl").exists()


def test_nan_temperature_as_a_process(tiny, tmp_path):
    assert "--temperature must be a finite number" in cli("inference_baseline",
                                                          common(tiny, tmp_path, "--temperature", "nan"))


@pytest.mark.parametrize("where", ["under a file", "under a missing root"])
def test_an_answer_file_that_cannot_be_written_fails_before_the_model_loads(tiny, tmp_path, capsys, where):
    (tmp_path / "plain-file").write_text("not a folder")
    path = tmp_path / "plain-file" / "a.jsonl" if where == "under a file" else "/proc/no-such-folder/a.jsonl"
    args = common(tiny, tmp_path)
    args[args.index("--answer-file") + 1] = str(path)
    message = fails(inference_baseline.main, args, capsys)
    assert f"--answer-file {path}: cannot create its folder" in message
    assert (tmp_path / "plain-file").read_text() == "not a folder"


def test_sampled_answers_are_standard_json(tiny, tmp_path):
    """No NaN or Infinity in any record: every line parses with the constants refused."""
    from evaluation.answers import answer_line

    done = subprocess.run([sys.executable, "-m", "evaluation.inference_baseline",
                           *common(tiny, tmp_path, "--temperature", "0.7", "--top-p", "0.9")],
                          cwd=REPO_ROOT / "inference", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    (line,) = (tmp_path / "a.jsonl").read_text().splitlines()
    assert json.loads(line, parse_constant=refuse)["settings"]["temperature"] == 0.7
    with pytest.raises(ValueError):
        answer_line({"question_id": 1, "wall_time": [float("nan")]})


def test_non_finite_stats_are_written_as_null():
    import torch

    from evaluation.eval import _jsonable

    assert _jsonable({"tau": float("nan"), 3: torch.tensor([1.0, float("inf")]), "n": [2, float("-inf")]}) == \
        {"tau": None, "3": [1.0, None], "n": [2, None]}


# ---------------------------------------------------------------- damaged folders, found before the target loads

@pytest.fixture(scope="module")
def unloadable(tiny, tmp_path_factory):
    """A target folder that passes every file check but fails in from_pretrained (its config no longer
    fits its weights): a run that reports a draft's fault with it checked the draft first."""
    path = tmp_path_factory.mktemp("unloadable") / "target"
    path.mkdir()
    for f in tiny[0].iterdir():
        (path / f.name).write_bytes(f.read_bytes())
    config = json.loads((path / "config.json").read_text())
    config["intermediate_size"] += 8
    (path / "config.json").write_text(json.dumps(config))
    return path


def copy_folder(source, destination):
    destination.mkdir()
    for f in source.iterdir():
        (destination / f.name).write_bytes(f.read_bytes())
    return destination


def truncate(path):
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def with_vocab(text):
    def damage(folder):
        config = json.loads((folder / "config.json").read_text())
        config["sd2"]["draft_vocab_file"] = "draft_vocab.json"
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "draft_vocab.json").write_text(text)
    return damage


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "config.json").write_text('{"sd2": {"exits": [1, '), "config.json is not valid JSON"),
    (lambda d: truncate(d / "model.safetensors"), "model.safetensors is truncated or damaged"),
    (lambda d: (d / "model.safetensors").unlink(), "no weights (model.safetensors or pytorch_model.bin"),
    (with_vocab("[1, 2"), "draft_vocab.json is not valid JSON"),
    (with_vocab("[1, 5.5, 7]"), "draft_vocab.json: token ids must be whole numbers [0, 49152), found [5.5]"),
    (with_vocab("[1, 99999]"), "found [99999]"),
    (with_vocab("[4, 2, 4]"), "token ids must be distinct, [4] repeated"),
    (with_vocab('{"ids": [1]}'), "expected a non-empty JSON list of token ids"),
])
def test_a_damaged_draft_is_reported_before_the_target_loads(tiny, unloadable, tmp_path, capsys, damage, message):
    draft = copy_folder(tiny[1], tmp_path / "draft")
    damage(draft)
    args = common(tiny, tmp_path, "--drafter-path", str(draft))
    args[args.index("--model-path") + 1] = str(unloadable)
    assert message in fails(inference_sd2.main, args, capsys)


def test_a_truncated_draft_as_a_process(tiny, unloadable, tmp_path):
    draft = copy_folder(tiny[1], tmp_path / "draft")
    truncate(draft / "model.safetensors")
    args = common(tiny, tmp_path, "--drafter-path", str(draft))
    args[args.index("--model-path") + 1] = str(unloadable)
    message = cli("inference_sd2", args)
    assert f"--drafter-path: {draft / 'model.safetensors'} is truncated or damaged" in message
    assert not (tmp_path / "a.jsonl").exists()


@pytest.mark.parametrize("method, flag", [("medusa", "--medusa-model-path"), ("eagle2", "--ea-model-path")])
def test_a_head_folder_with_a_fractional_draft_vocabulary(tiny, unloadable, tmp_path, capsys, method, flag):
    from evaluation import inference_eagle2, inference_medusa

    heads = copy_folder(tiny[0], tmp_path / "heads")  # a readable config and whole weights
    if method == "medusa":
        (heads / "config.json").write_text(json.dumps({"sd2_heads": {"kind": "medusa", "draft_vocab": [3, 5.5],
                                                                     "vocab_size": 49152}}))
    else:
        (heads / "draft_vocab.json").write_text("[3, 5.5]")
    main = inference_medusa.main if method == "medusa" else inference_eagle2.main
    args = common(tiny, tmp_path, flag, str(heads))
    args[args.index("--model-path") + 1] = str(unloadable)
    assert "token ids must be whole numbers [0, 49152), found [5.5]" in fails(main, args, capsys)


def test_a_target_without_tokenizer_files(tiny, tmp_path, capsys):
    target = copy_folder(tiny[0], tmp_path / "target")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (target / name).unlink()
    args = common(tiny, tmp_path)
    args[args.index("--model-path") + 1] = str(target)
    message = fails(inference_baseline.main, args, capsys)
    assert f"--model-path {target}: no tokenizer files (one of tokenizer.json" in message
    assert "sentencepiece" not in message


@pytest.mark.parametrize("flags, message", [
    (["--depth", "-5"], "--depth -5 shapes a tree, and this run drafts a chain: add --tree"),
    (["--top-k", "3", "--total-token", "8"], "--total-token 8, --top-k 3 shape a tree"),
    (["--tree", "--total-token", "100000"], "--total-token 100000 exceeds the 411 nodes a tree of --depth 4 and --top-k 10"),
    (["--tree", "--total-token", "20", "--depth", "1", "--top-k", "3"], "exceeds the 13 nodes"),
])
def test_tree_flags_are_checked_before_the_target_loads(tiny, unloadable, tmp_path, capsys, flags, message):
    args = common(tiny, tmp_path, "--drafter-path", str(tiny[1]), *flags)
    args[args.index("--model-path") + 1] = str(unloadable)
    assert message in fails(inference_sd2.main, args, capsys)


def test_a_tree_at_its_largest_runs(tiny, tmp_path):
    from evaluation import inference_sd2 as sd2

    sd2.main(common(tiny, tmp_path, "--drafter-path", str(tiny[1]), "--tree", "--total-token", "13", "--depth", "1",
                    "--top-k", "3"))
    (line,) = (tmp_path / "a.jsonl").read_text().splitlines()
    assert "error" not in json.loads(line)


# ---------------------------------------------------------------- bytes that are not UTF-8

def test_non_utf8_question_and_answer_files_name_file_and_line(tiny, tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    questions.write_bytes(b'{"question_id": 1, "category": "qa", "turns": ["ok"]}\n'
                          b'{"question_id": 2, "category": "qa", "turns": ["caf\xe9"]}\n')
    message = fails(inference_baseline.main, common(tiny, tmp_path, "--question-file", str(questions)), capsys)
    assert f"{questions}:2: not UTF-8 text (byte 0xe9 at column 52)" in message

    inference_baseline.main(common(tiny, tmp_path, "--question-end", "2"))
    answers = tmp_path / "a.jsonl"
    first, second = answers.read_bytes().splitlines(keepends=True)
    answers.write_bytes(first.replace(b'"m"', b'"m\xff"') + second)  # a damaged record, not the torn last one
    before = answers.read_bytes()
    message = fails(inference_baseline.main, common(tiny, tmp_path, "--question-end", "3"), capsys)
    assert f"{answers}:1: malformed answer line (not UTF-8 text: byte 0xff" in message
    assert answers.read_bytes() == before  # nothing cut or added


# ---------------------------------------------------------------- one writer per answer file

def test_a_second_run_on_one_answer_file_is_refused_and_nothing_is_lost(tiny, tmp_path):
    """A run answering into a file another process holds is refused, naming the holder, and changes
    nothing; once the holder ends the run resumes with every answer once. The holder is a process
    holding the answer file's lock (what a running eval holds), so the test does not depend on how
    fast a tiny model answers."""
    path = tmp_path / "a.jsonl"

    def answer(*extra):
        done = subprocess.run([sys.executable, "-m", "evaluation.inference_baseline",
                               *common(tiny, tmp_path, *extra, "--max-new-tokens", "8")],
                              cwd=REPO_ROOT / "inference", capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    answer("--question-end", "3")
    before = path.read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from sd2.file_lock import exclusive_lock\n"
                               "with exclusive_lock(sys.argv[1], 'answer file'):\n"
                               "    print('held', flush=True); time.sleep(300)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        message = cli("inference_baseline", common(tiny, tmp_path, "--question-end", "6", "--max-new-tokens", "8"))
        assert f"answer file {path} is being written by another run (process {holder.pid})" in message
        assert path.read_bytes() == before  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()
    answer("--question-end", "6")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 6 == len({r["question_id"] for r in records})  # every answer once
    assert not list(tmp_path.glob("*.tmp"))


def test_concurrent_reorders_never_share_a_temporary_file(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from evaluation.answers import reorganize_answers

    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"question_id": q, "model_id": "m"}) + "\n" for q in (5, 3, 9, 1)))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: reorganize_answers(path), range(200)))
    assert all([r["question_id"] for r in result] == [1, 3, 5, 9] for result in results)
    assert [json.loads(line)["question_id"] for line in path.read_text().splitlines()] == [1, 3, 5, 9]
    assert [p.name for p in tmp_path.iterdir()] == ["a.jsonl"]


def test_a_resume_redoes_answers_whose_question_changed(tiny, tmp_path, capsys):
    questions = tmp_path / "q.jsonl"

    def write_questions(second_turn):
        questions.write_text(json.dumps({"question_id": 1, "category": "qa", "turns": ["Name a colour."]}) + "\n"
                             + json.dumps({"question_id": 2, "category": "qa", "turns": [second_turn]}) + "\n")

    write_questions("Name a fruit.")
    args = common(tiny, tmp_path, "--question-file", str(questions), "--question-end", "2")
    inference_baseline.main(args)
    before = {r["question_id"]: r for r in map(json.loads, (tmp_path / "a.jsonl").read_text().splitlines())}
    write_questions("Name a river.")  # question 2 edited in place, same id
    capsys.readouterr()
    inference_baseline.main(args)
    out = capsys.readouterr().out
    assert "1 answer(s) in" in out and "another version of their question" in out and "[2]" in out
    after = {r["question_id"]: r for r in map(json.loads, (tmp_path / "a.jsonl").read_text().splitlines())}
    assert sorted(after) == [1, 2]
    assert after[1]["answer_id"] == before[1]["answer_id"]  # unchanged question: kept
    assert after[2]["answer_id"] != before[2]["answer_id"]  # changed question: answered again
    assert after[2]["question_fingerprint"] != before[2]["question_fingerprint"]
