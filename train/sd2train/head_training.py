"""What the head trainers (EAGLE, EAGLE-3, Medusa/Hydra: ``sd2train.eagle``, ``.eagle3``,
``.heads``) share: the model arguments, the settings a small head cannot use, and one run — data
and target checked, the head made, trained against the frozen target, saved, reported on."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer

from sd2train.checkpoints import resume_checkpoint
from sd2train.errors import InputError
from sd2train.train import (
    DataArguments,
    build_dataset,
    check_model_folder,
    frozen_model_dtype,
    heldout_report,
    load_model,
    load_tokenizer,
    training_callbacks,
    training_conversations,
)


def train_and_save_head(trainer: Trainer, head, tokenizer, output: Path) -> float | None:
    """Train (resuming from ``--resume_from_checkpoint``), then save the full weights (gathered from
    every process where FSDP or DeepSpeed shard them) with ``head.save`` and the tokenizer beside
    them. Returns the minutes trained on the main process, None on the others."""
    started = time.time()
    trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    weights = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # every process takes part
    if not trainer.is_world_process_zero():
        return None
    head.save(output, weights)
    tokenizer.save_pretrained(output)
    return (time.time() - started) / 60


@dataclass
class HeadModelArguments:
    """What every head trainer (EAGLE, EAGLE-3, Medusa/Hydra) is told of the model: the frozen target
    and the draft vocabulary the head scores."""

    target_model_name_or_path: str = field(metadata={"help": "the target the head drafts for (frozen)"})
    draft_vocab_size: int = field(default=8192, metadata={"help": "the head scores the N tokens most frequent in the "
                                                                  "training replies, special tokens first, listed in "
                                                                  "draft_vocab.json beside it (0 = the target's "
                                                                  "whole vocabulary)"})


def check_head_parallelism(args, what: str, why_no_checkpointing: str, fsdp: str = "FSDP") -> None:
    """What a small head over a frozen target cannot use (the EAGLE, EAGLE-3 and Medusa/Hydra
    trainers); ``what`` names the head, ``fsdp`` the FSDP config to use instead."""
    if args.gradient_checkpointing:
        raise InputError(f"--gradient_checkpointing: {why_no_checkpointing}, nothing to checkpoint")
    ds_config = getattr(args, "hf_deepspeed_config", None)
    if ds_config is not None and ds_config.is_zero3():
        # ZeRO-3 would also partition the frozen target as it loads, and a head this small gains
        # nothing from sharded parameters.
        raise InputError(f"DeepSpeed ZeRO-3 is not supported for {what}: use ZeRO-2 (train/configs/zero2.json) "
                         f"or {fsdp}")


def train_head_model(target_path, data_args: DataArguments, args, make_head, trainer_class, report, name: str) -> Path:
    """One run of a head trainer (EAGLE, EAGLE-3, Medusa/Hydra): a torn checkpoint refused and the
    target folder and data checked before the target loads (in float32: a head starts as copies of
    its parts); ``make_head(target, tokenizer, conversations)`` gives (head, the trainer's own
    settings); the head trains in float32 against the target frozen in the mixed precision, is saved
    to --output_dir, a line naming the run (``name``), its steps and minutes is printed, then ``report``
    runs on held-out prompts."""
    from sd2train.preprocess import PaddingCollator

    args.resume_from_checkpoint = resume_checkpoint(args)
    check_model_folder(target_path, "--target_model_name_or_path")
    conversations = training_conversations(data_args, args.seed)
    target = load_model(target_path, "--target_model_name_or_path", torch.float32)
    tokenizer = load_tokenizer(target_path, args.model_max_length)
    head, settings = make_head(target, tokenizer, conversations)
    target.to(frozen_model_dtype(args)).eval().requires_grad_(False)
    target.to(args.device)
    dataset = build_dataset(conversations, tokenizer, data_args, args.model_max_length, args.seed)
    trainer = trainer_class(model=head, args=args, train_dataset=dataset,
                            data_collator=PaddingCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                            callbacks=training_callbacks(args), target=target, **settings)
    output = Path(args.output_dir)
    minutes = train_and_save_head(trainer, head, tokenizer, output)
    if minutes is not None:
        share = getattr(trainer, "target_forward_share", None)  # the trainers that time the target's pass
        timing = f"; the target's forward took {share():.0%} of the training steps' time" if share else ""
        print(f"[{name}] {trainer.state.global_step} steps in {minutes:.1f} min{timing}; saved to {output}")
        del trainer, target, head  # the report loads its own
        heldout_report(report, output, target_path, args, data_args)
    return output
