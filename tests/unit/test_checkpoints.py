"""The newest complete checkpoint, one rule for the launch scripts and the trainers: real Hugging
Face Trainer checkpoints of a tiny model, the newer one torn as a kill while saving leaves it; the
older complete one is picked (by the real CLI and by the scripts' own lines), a resume from a torn
one is refused, and a resume from the complete one runs and saves the torn step again, whole."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers

from sd2train.checkpoints import checkpoint_problem, latest_complete_checkpoint, resume_checkpoint
from sd2train.errors import InputError

from helpers import tiny_llama

REPO = Path(__file__).resolve().parents[2]


def training_args(output_dir, max_steps=2):
    return transformers.TrainingArguments(output_dir=str(output_dir), use_cpu=True, max_steps=max_steps,
                                          save_strategy="steps", save_steps=1, per_device_train_batch_size=2,
                                          logging_steps=1, report_to="none", disable_tqdm=True)


def run_trainer(output_dir, max_steps=2, resume=None):
    model = tiny_llama(num_layers=2, hidden=32).train()
    tokens = torch.randint(0, 128, (4, 8), generator=torch.Generator().manual_seed(0))
    dataset = [{"input_ids": ids, "labels": ids} for ids in tokens]
    trainer = transformers.Trainer(model=model, args=training_args(output_dir, max_steps), train_dataset=dataset)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A training output folder holding the real checkpoint-1 and checkpoint-2 of a 2-step run."""
    out = tmp_path_factory.mktemp("run") / "out"
    run_trainer(out)
    return out


@pytest.fixture
def run(trained, tmp_path):
    return Path(shutil.copytree(trained, tmp_path / "out"))


def cut(path: Path, keep: float = 0.5):
    with path.open("r+b") as f:
        f.truncate(int(path.stat().st_size * keep))


def killed_while_saving_weights(ckpt: Path):
    """What a kill during ``save_model`` leaves: the config, half the weights, nothing after them."""
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        (ckpt / name).unlink()
    cut(ckpt / "model.safetensors")


def config_and_a_tmp_file(ckpt: Path):
    """The probe's case: config.json and an unfinished temporary file only."""
    for path in ckpt.iterdir():
        if path.name != "config.json":
            path.unlink()
    (ckpt / ".model.safetensors.x1y2.tmp").write_bytes(b"\0" * 100)


def whole_but_a_tmp_file(ckpt: Path):
    """Every file whole, but an atomic write (the time budget's) cut before its rename."""
    (ckpt / ".train_time.json.ab12.tmp").write_text('{"sec')


def weights_cut_under_an_old_trainer_state(ckpt: Path):
    cut(ckpt / "model.safetensors", 0.9)


def trainer_state_cut_off(ckpt: Path):
    cut(ckpt / "trainer_state.json")


TORN = {
    "killed while saving weights": (killed_while_saving_weights, "no trainer_state.json"),
    "config and a .tmp file": (config_and_a_tmp_file, "no trainer_state.json"),
    "whole but a .tmp file": (whole_but_a_tmp_file, "an unfinished write (.train_time.json.ab12.tmp)"),
    "weights cut": (weights_cut_under_an_old_trainer_state, "model.safetensors is truncated or damaged"),
    "trainer state cut off": (trainer_state_cut_off, "trainer_state.json is cut off or damaged"),
}


def test_real_trainer_checkpoints_are_complete(trained):
    assert checkpoint_problem(trained / "checkpoint-1") is None
    assert checkpoint_problem(trained / "checkpoint-2") is None
    assert latest_complete_checkpoint(trained) == trained / "checkpoint-2"  # by step, not by name order


@pytest.mark.parametrize("case", TORN)
def test_a_newer_torn_checkpoint_is_skipped_for_the_older_complete_one(run, case):
    tear, problem = TORN[case]
    tear(run / "checkpoint-2")
    skipped = []
    assert latest_complete_checkpoint(run, report=lambda folder, why: skipped.append((folder, why))) == \
        run / "checkpoint-1"
    assert len(skipped) == 1 and skipped[0][0] == run / "checkpoint-2" and problem in skipped[0][1]


def test_no_complete_checkpoint(run, tmp_path):
    killed_while_saving_weights(run / "checkpoint-1")
    config_and_a_tmp_file(run / "checkpoint-2")
    assert latest_complete_checkpoint(run) is None
    assert latest_complete_checkpoint(tmp_path / "never-trained") is None


def cli(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'train'}"}
    return subprocess.run([sys.executable, "-m", "sd2train.checkpoints", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120, **kwargs)


def test_the_cli_prints_the_newest_complete_checkpoint_and_names_the_skipped(run, tmp_path):
    config_and_a_tmp_file(run / "checkpoint-2")
    torn_later = run / "checkpoint-10"  # newest by number, and by `sort -V`
    torn_later.mkdir()
    (torn_later / "config.json").write_text("{}")
    result = cli(run)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{run / 'checkpoint-1'}\n"
    assert f"skipping {torn_later}: incomplete (no trainer_state.json" in result.stderr
    assert f"skipping {run / 'checkpoint-2'}: incomplete" in result.stderr
    none = cli(tmp_path / "never-trained")
    assert none.returncode == 0 and none.stdout == "" and none.stderr == ""


@pytest.mark.parametrize("script, folder_variable", [("scripts/quickstart.sh", "DRAFT"),
                                                     ("train/scripts/train_draft_soft_long_cpu.sh", "OUTPUT_DIR")])
def test_the_launch_scripts_pick_the_checkpoint_with_the_cli(run, script, folder_variable):
    """Each script's own RESUME line, run by bash as the script runs it: the complete checkpoint-1,
    not the torn checkpoint-2 that ``ls checkpoint-* | sort -V | tail -1`` picked."""
    lines = [line.strip() for line in (REPO / script).read_text().splitlines() if line.strip().startswith("RESUME=")]
    assert len(lines) == 1, lines
    config_and_a_tmp_file(run / "checkpoint-2")
    env = {**os.environ, "PY": sys.executable, "PYTHON": sys.executable, folder_variable: str(run),
           "PYTHONPATH": f"{REPO}:{REPO / 'train'}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", f'{lines[0]}\necho "resume=$RESUME"'],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"resume={run / 'checkpoint-1'}\n"
    assert "skipping" in result.stderr and "checkpoint-2" in result.stderr


def resume_args(run, checkpoint, process_index=0):
    return SimpleNamespace(output_dir=str(run), resume_from_checkpoint=checkpoint and str(checkpoint),
                           process_index=process_index)


def test_a_resume_from_a_torn_checkpoint_is_refused_naming_the_complete_one(run):
    killed_while_saving_weights(run / "checkpoint-2")
    with pytest.raises(InputError, match=r"checkpoint-2 is incomplete \(no trainer_state.json .*\): a run was "
                                         r"killed while saving it; resume from .*checkpoint-1, the newest complete"):
        resume_checkpoint(resume_args(run, run / "checkpoint-2"))
    assert (run / "checkpoint-2").is_dir()  # refused: nothing removed
    with pytest.raises(InputError, match="not found"):
        resume_checkpoint(resume_args(run, run / "checkpoint-7"))


def test_a_resume_from_the_complete_one_runs_and_saves_the_torn_step_whole(run):
    whole_but_a_tmp_file(run / "checkpoint-2")
    resume = latest_complete_checkpoint(run)
    assert resume == run / "checkpoint-1"
    other_rank = resume_checkpoint(resume_args(run, resume, process_index=1))
    assert other_rank == str(resume) and (run / "checkpoint-2").is_dir()  # only the main process removes
    assert resume_checkpoint(resume_args(run, resume)) == str(resume)
    assert not (run / "checkpoint-2").exists()  # torn and newer: the run saves it again
    trainer = run_trainer(run, resume=str(resume))
    assert trainer.state.global_step == 2
    assert latest_complete_checkpoint(run) == run / "checkpoint-2"
    assert json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2


def test_a_fresh_start_removes_only_torn_checkpoints(run):
    config_and_a_tmp_file(run / "checkpoint-2")
    assert resume_checkpoint(resume_args(run, None)) is None
    assert not (run / "checkpoint-2").exists() and checkpoint_problem(run / "checkpoint-1") is None
