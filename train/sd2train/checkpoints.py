"""Which of a training run's checkpoints a rerun resumes from: the newest *complete* one.

    python -m sd2train.checkpoints OUTPUT_DIR    # prints its path, or nothing; skipped ones on stderr

A run killed while saving leaves a torn ``checkpoint-N`` (a ``config.json`` and half a weights
file, no trainer state) that the Hugging Face Trainer cannot resume from, and that the newest-by-
number rule (``ls checkpoint-* | sort -V | tail -1``, ``transformers.trainer_utils.
get_last_checkpoint``) picks every time. The Trainer writes a checkpoint's weights, then its
optimizer, scheduler and RNG states, then ``trainer_state.json`` last
(``Trainer._save_checkpoint``); so a checkpoint is complete when

- ``trainer_state.json`` is there and parses (the last file written, so every earlier one is too),
- its weights are all there and whole (``sd2.weight_files``: sizes and safetensors headers), and
- no write was left unfinished in it (no ``*.tmp`` file: an atomic write was cut before its
  rename).

The time budget's seconds spent are inside ``trainer_state.json`` (``train.TimeLimitCallback``),
so a complete checkpoint always has them.

The launch scripts pick the checkpoint with the CLI; the trainers check the one they are given
(``resume_checkpoint``) and remove torn checkpoints newer than it, which the resumed run would
otherwise save into around their stale files.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from sd2.weight_files import weights_problem
from sd2train.errors import InputError

TRAINER_STATE_FILE = "trainer_state.json"  # transformers' TRAINER_STATE_NAME: written last
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")  # transformers' PREFIX_CHECKPOINT_DIR-<global step>


def checkpoints_by_step(output_dir) -> list[tuple[int, Path]]:
    """(step, folder) of every ``checkpoint-<step>`` folder in ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in output_dir.iterdir()
             if path.is_dir() and (m := CHECKPOINT_NAME.match(path.name))]
    return sorted(found)


def checkpoint_problem(checkpoint) -> str | None:
    """Why a checkpoint folder cannot be resumed from (it was torn by a kill), or None if it is complete."""
    checkpoint = Path(checkpoint)
    state = checkpoint / TRAINER_STATE_FILE
    if not state.is_file():
        return f"no {TRAINER_STATE_FILE} (the Trainer writes it last)"
    try:
        json.loads(state.read_bytes())["global_step"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return f"{TRAINER_STATE_FILE} is cut off or damaged"
    problem = weights_problem(checkpoint)
    if problem:
        return problem
    unfinished = sorted(path.name for path in checkpoint.iterdir() if path.name.endswith(".tmp"))
    if unfinished:
        return f"an unfinished write ({', '.join(unfinished[:3])})"
    return None


def latest_complete_checkpoint(output_dir, report=None) -> Path | None:
    """The complete checkpoint of the highest step in ``output_dir`` (None if there is none);
    ``report(folder, problem)`` hears of every newer torn one skipped."""
    for _, checkpoint in reversed(checkpoints_by_step(output_dir)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        if report is not None:
            report(checkpoint, problem)
    return None


def resume_checkpoint(args) -> str | None:
    """What a trainer passes to ``Trainer.train(resume_from_checkpoint=...)``, from its
    TrainingArguments: ``None`` (a fresh start) or ``--resume_from_checkpoint``, refused, with the
    newest complete checkpoint named, when it is torn. Torn checkpoints newer than it (every torn
    one, on a fresh start) are removed first by the main process: the run saves those steps again,
    and a save into a torn folder would keep its stale files."""
    resumed_step = -1
    if args.resume_from_checkpoint:
        checkpoint = Path(args.resume_from_checkpoint)
        if not checkpoint.is_dir():
            raise InputError(f"--resume_from_checkpoint {checkpoint}: not found")
        problem = checkpoint_problem(checkpoint)
        if problem:
            latest = latest_complete_checkpoint(checkpoint.parent)
            instead = f"resume from {latest}, the newest complete one" if latest else "no complete checkpoint is there"
            raise InputError(f"--resume_from_checkpoint {checkpoint} is incomplete ({problem}): a run was killed "
                             f"while saving it; {instead}")
        match = CHECKPOINT_NAME.match(checkpoint.name)
        resumed_step = int(match.group(1)) if match else -1
    if args.process_index == 0:
        for step, folder in checkpoints_by_step(args.output_dir):
            problem = checkpoint_problem(folder) if step > resumed_step else None
            if problem:
                print(f"[checkpoints] removing the torn {folder} ({problem})", file=sys.stderr)
                shutil.rmtree(folder)
    return str(args.resume_from_checkpoint) if args.resume_from_checkpoint else None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="a training run's --output_dir")
    args = parser.parse_args(argv)

    def skipped(folder, problem):
        print(f"[checkpoints] skipping {folder}: incomplete ({problem})", file=sys.stderr)

    latest = latest_complete_checkpoint(args.output_dir, report=skipped)
    if latest is not None:
        print(latest)


if __name__ == "__main__":
    main()
