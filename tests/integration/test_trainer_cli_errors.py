"""The trainers' bad input, as a new user meets it: SoFT's (``sd2train.train``), EAGLE's, EAGLE-3's
and the Medusa/Hydra heads' command lines each end with one ``error:`` line naming the problem and
exit code 2, before any model loads where the problem is known by then, and write nothing.

In-process through ``run_cli`` (what each module's ``__main__`` calls); one case per trainer runs
as a real process to pin that wiring down. The models are tiny random ones with the default
target's tokenizer."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from sd2.paths import DEFAULT_MODEL_DIR, REPO_ROOT
from sd2train import eagle, eagle3, heads
from sd2train import train as soft
from sd2train.errors import run_cli

from helpers import save_tiny_text_target

TRAINERS = {"soft": soft.main, "eagle": eagle.main, "eagle3": eagle3.main, "medusa": heads.main}
MODULES = {"soft": "sd2train.train", "eagle": "sd2train.eagle", "eagle3": "sd2train.eagle3", "medusa": "sd2train.heads"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny target, and a draft of it (config.sd2: exits 1, 2)."""
    root = tmp_path_factory.mktemp("trainers")
    target = save_tiny_text_target(root / "target", DEFAULT_MODEL_DIR)
    draft = shutil.copytree(target, root / "draft")
    config = json.loads((draft / "config.json").read_text())
    config["sd2"] = {"exits": [1, 2], "target": str(target)}
    (draft / "config.json").write_text(json.dumps(config))
    return target, draft


def argv(trainer, models, out, *extra):
    target, draft = models
    common = ["--output_dir", str(out), "--use_cpu", "True", "--report_to", "none", "--max_steps", "1",
              "--exit_quality_prompts", "0"]
    if trainer == "soft":
        return ["--model_name_or_path", str(draft), "--submodels", "1,2", *common, *extra]
    kind = ["--kind", "medusa"] if trainer == "medusa" else []
    return ["--target_model_name_or_path", str(target), *kind, *common, *extra]


def fails(main, args, capsys) -> str:
    """``main`` run as its command line: exit 2 and one error line, no traceback. Returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.count("error: ") == 1 and "Traceback" not in err, err
    return err[err.index("error: "):].strip()


def wrote_nothing(out) -> bool:
    return not out.exists() or not any(out.iterdir())


def replies_file(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_a_missing_data_path(trainer, models, tmp_path, capsys):
    out, missing = tmp_path / "out", tmp_path / "replies-typo.jsonl"
    message = fails(TRAINERS[trainer], argv(trainer, models, out, "--data-path", str(missing)), capsys)
    assert message == f"error: --data_path {missing}: no such file (a ShareGPT JSON or JSONL file)"
    assert wrote_nothing(out)


NO_TRAINING_DATA = {
    "empty": ([], "the file is empty (no conversations)"),
    "all filtered": ([{"id": f"c{i}", "conversations": [{"from": "human", "value": "Hello?"},
                                                        {"from": "gpt", "value": "  "}]} for i in range(5)],
                     "no usable conversations (0 conversations from 5 records"),
}


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize("case", NO_TRAINING_DATA)
def test_no_training_data(trainer, case, models, tmp_path, capsys):
    records, named = NO_TRAINING_DATA[case]
    data, out = replies_file(tmp_path / "replies.jsonl", records), tmp_path / "out"
    message = fails(TRAINERS[trainer], argv(trainer, models, out, "--data_path", data), capsys)
    assert message.startswith(f"error: {data}: ") and named in message, message
    assert wrote_nothing(out)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_conversation_held_out(trainer, models, tmp_path, capsys):
    data = replies_file(tmp_path / "replies.jsonl", [{"id": "c0", "conversations": [
        {"from": "human", "value": "Hello?"}, {"from": "gpt", "value": "Hi."}]}])
    args = argv(trainer, models, tmp_path / "out", "--data_path", data, "--heldout_fraction", "0.999999")
    message = fails(TRAINERS[trainer], args, capsys)
    assert message.startswith(f"error: no training data: no conversations left in {data} after holding out")


@pytest.mark.parametrize("trainer", ["eagle", "eagle3", "medusa"])
def test_a_missing_target(trainer, models, tmp_path, capsys):
    missing = tmp_path / "no-target"
    args = argv(trainer, models, tmp_path / "out")
    args[args.index("--target_model_name_or_path") + 1] = str(missing)
    message = fails(TRAINERS[trainer], args, capsys)
    assert message == f"error: --target_model_name_or_path {missing}: not found (give a model folder or a hub name)"


def test_bad_settings_name_their_flag(models, tmp_path, capsys):
    out = tmp_path / "out"
    assert "--submodels: exits must be strictly increasing, got [2, 1]" in fails(
        soft.main, argv("soft", models, out, "--submodels", "2,1", "--soft", "True"), capsys)
    assert "--num_heads must be >= 1, got 0" in fails(heads.main, argv("medusa", models, out, "--num_heads", "0"),
                                                      capsys)
    assert "--ttt_steps must be >= 1, got 0" in fails(eagle3.main, argv("eagle3", models, out, "--ttt_steps", "0"),
                                                      capsys)
    assert "--feature_noise must be >= 0" in fails(eagle.main, argv("eagle", models, out, "--feature_noise", "-1"),
                                                   capsys)


def test_a_torn_checkpoint_to_resume_from(models, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "checkpoint-50").mkdir(parents=True)
    (out / "checkpoint-50" / "config.json").write_text("{}")
    message = fails(soft.main, argv("soft", models, out, "--resume_from_checkpoint", str(out / "checkpoint-50")),
                    capsys)
    assert message == (f"error: --resume_from_checkpoint {out / 'checkpoint-50'} is incomplete (no trainer_state.json "
                       "(the Trainer writes it last)): a run was killed while saving it; no complete checkpoint is "
                       "there")


@pytest.mark.parametrize("trainer", [pytest.param(t, marks=[] if t == "eagle" else pytest.mark.slow) for t in TRAINERS])
def test_the_command_line_as_a_process(trainer, models, tmp_path):
    out, missing = tmp_path / "out", tmp_path / "replies-typo.jsonl"
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'train'}"}
    result = subprocess.run([sys.executable, "-m", MODULES[trainer], *argv(trainer, models, out, "--data-path",
                                                                           str(missing))],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and result.stderr.count("error: ") == 1, result.stderr[-3000:]
    assert f"error: --data_path {missing}: no such file" in result.stderr
    assert wrote_nothing(out)
