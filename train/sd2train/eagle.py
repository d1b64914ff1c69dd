"""Train an EAGLE draft head for a target (EAGLE, Li et al. 2024), on the data SoFT trains on.

    python -m sd2train.eagle --target_model_name_or_path models/smollm2-135m-instruct \
        --output_dir models/eagle-smollm2-135m --data_path outputs/target_replies/smollm2-135m-instruct-n128.jsonl \
        [--feature_weight 1.0 --token_weight 0.1 --feature_noise 0.2] [--draft_vocab_size 8192] \
        [--model_max_length 2048] [HF TrainingArguments]

The head (``sd2.eagle_head``) reads, at row t, the target's feature f_t (its last decoder layer's
output, before the final norm) and the next token x_{t+1}, and predicts f_{t+1}. The target is
frozen; its features are computed on the fly, each batch, by a forward hook on its last decoder
layer (no feature cache on disk). EAGLE's loss, over the rows whose predicted token x_{t+2} is an
assistant token (label != -100):

    feature_weight * SmoothL1(predicted f_{t+1}, true f_{t+1})
    + token_weight * CE(target's distribution at t+1, the head's: the target's norm and head over
                        the predicted feature)

with EAGLE's uniform noise on the input features. Data and arguments are the SoFT trainer's
(``sd2train.train``); under torchrun it runs with FSDP or DeepSpeed ZeRO-2 like any HF Trainer. At
the end the head is saved as its own folder (``EagleHead.save``: config naming the target,
safetensors) with the target's tokenizer, the loss log and the draft vocabulary (draft_vocab.json,
written first), and its held-out agreement is measured (``sd2train.exit_quality --eagle``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from sd2.draft_spec import DRAFT_VOCAB_FILE
from sd2.eagle_head import EagleHead
from sd2train.errors import InputError, run_cli
from sd2train.exit_quality import eagle_quality
from sd2train.exits import last_layer_states, unwrap
from sd2train.head_training import HeadModelArguments, check_head_parallelism, train_head_model
from sd2train.preprocess import IGNORE_INDEX
from sd2train.recipes import recipe_main
from sd2train.train import DataArguments, DraftTrainingArguments, PartsLoggingTrainer

# EAGLE's noise is uniform, of width std * 512 / L on an L-token sequence (its AddUniformNoise).
NOISE_REFERENCE_LENGTH = 512


@dataclass
class EagleModelArguments(HeadModelArguments):
    """EAGLE's: the target and the draft vocabulary."""


@dataclass
class EagleTrainingArguments(DraftTrainingArguments):
    feature_weight: float = field(default=1.0, metadata={"help": "weight of the SmoothL1 feature regression (EAGLE's v_w)"})
    token_weight: float = field(default=0.1, metadata={"help": "weight of the cross-entropy to the target's distribution (EAGLE's p_w)"})
    feature_noise: float = field(default=0.2, metadata={"help": "EAGLE's uniform noise on the input features: width "
                                                                "this * 512 / sequence length (0 = none)"})
    # The head's forward takes (next_ids, features), not the batch's columns: keep them all.
    remove_unused_columns: bool = False


@dataclass
class EagleLoss:
    loss: torch.Tensor
    feature_loss: float  # SmoothL1 of the predicted features, before weighting
    token_loss: float  # cross-entropy to the target's distribution, before weighting
    num_rows: int  # rows that count (their predicted token is an assistant token)


def feature_noise(features: torch.Tensor, lengths: torch.Tensor, std: float) -> torch.Tensor:
    """EAGLE's uniform noise for each row of ``features`` (batch, seq, hidden): U(-1/2, 1/2) * std *
    512 / L, where L is the row's sequence length (``lengths``, batch)."""
    scale = std * NOISE_REFERENCE_LENGTH / lengths.clamp(min=1).to(features.dtype)
    return (torch.rand_like(features) - 0.5) * scale[:, None, None]


def eagle_loss(head, features, input_ids, labels, attention_mask=None, feature_weight: float = 1.0,
               token_weight: float = 0.1, noise: float = 0.0) -> EagleLoss:
    """EAGLE's loss (see the module doc) for a batch: ``features`` (B, T, H) the target's f_0..f_{T-1}
    of ``input_ids`` (B, T), ``labels`` (B, T) -100 where not an assistant token. ``head`` may be
    wrapped (DDP, FSDP, DeepSpeed): its forward is called through the wrapper.

    Row t (0 <= t <= T-3) reads f_t and x_{t+1}, is compared with f_{t+1}, and its distribution
    with the target's at t+1, which predicts x_{t+2}: it counts when labels[t+2] != -100."""
    features = features.float()  # the frozen target's dtype may be lower; the head trains in float32
    inputs, next_ids, true_next = features[:, :-2], input_ids[:, 1:-1], features[:, 1:-1]
    if noise > 0:
        lengths = attention_mask.sum(1) if attention_mask is not None else torch.full_like(input_ids[:, 0], input_ids.shape[1])
        inputs = inputs + feature_noise(inputs, lengths, noise)
    predicted = head(next_ids, inputs)
    counted = labels[:, 2:] != IGNORE_INDEX
    if not counted.any():  # nothing labelled (e.g. truncated away): a zero that keeps the graph
        return EagleLoss(predicted.sum() * 0.0, 0.0, 0.0, 0)
    predicted, true_next = predicted[counted].float(), true_next[counted]
    feature_loss = F.smooth_l1_loss(predicted, true_next)
    logits_of = unwrap(head).logits
    with torch.no_grad():
        target_probs = F.softmax(logits_of(true_next).float(), -1)
    token_loss = -(target_probs * F.log_softmax(logits_of(predicted).float(), -1)).sum(-1).mean()
    loss = feature_weight * feature_loss + token_weight * token_loss
    return EagleLoss(loss, float(feature_loss.detach()), float(token_loss.detach()), int(counted.sum()))


def write_draft_vocab(output: Path, tokenizer, target, conversations, size: int) -> str:
    """draft_vocab.json beside the head, as make_draft writes it beside a draft: the ``size`` tokens
    most frequent in the conversations' assistant text, special and stop tokens first; returns the
    file's name, which the head's config records. Inference scores only these with the head
    (FR-Spec's reduced head; SD2's draft has the same)."""
    from sd2.draft_spec import write_draft_vocab_file
    from sd2train.make_draft import draft_vocab

    return write_draft_vocab_file(output, draft_vocab(tokenizer, conversations, size, target.generation_config))


def _synchronize(device: torch.device) -> None:
    """Wait for the GPU, so that wall-clock timings cover the work queued (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EagleTrainer(PartsLoggingTrainer):
    """HF Trainer for an EAGLE head: each batch's features come from the frozen ``target``; logs
    EAGLE's two loss terms and the share of the step time spent in the target's forward."""

    def __init__(self, *args, target, feature_weight=1.0, token_weight=0.1, noise=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.target, self.feature_weight, self.token_weight, self.noise = target, feature_weight, token_weight, noise
        self.seconds = {"target_forward": 0.0, "train_step": 0.0}  # over the whole run

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        started = time.perf_counter()
        with torch.no_grad():
            features = last_layer_states(self.target, inputs["input_ids"], inputs.get("attention_mask"))
        _synchronize(features.device)
        target_seconds = time.perf_counter() - started
        self.seconds["target_forward"] += target_seconds
        result = eagle_loss(model, features, inputs["input_ids"], inputs["labels"], inputs.get("attention_mask"),
                            self.feature_weight, self.token_weight, self.noise)
        self.record(loss_feature=result.feature_loss, loss_token=result.token_loss, target_forward_s=target_seconds)
        return (result.loss, None) if return_outputs else result.loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        started = time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        _synchronize(self.args.device)
        step_seconds = time.perf_counter() - started
        self.seconds["train_step"] += step_seconds
        self.record(train_step_s=step_seconds)
        return loss

    def log(self, logs, start_time=None):
        if "loss" in logs and self._part_sums.get("train_step_s"):
            share = self._part_sums["target_forward_s"] / self._part_sums["train_step_s"]
            logs["target_forward_share"] = round(share, 3)
        super().log(logs, start_time)

    def target_forward_share(self) -> float:
        """The target's forward as a share of the time spent in training steps (forward, backward)."""
        return self.seconds["target_forward"] / max(self.seconds["train_step"], 1e-9)


def check_arguments(args: EagleTrainingArguments) -> None:
    """Clear errors for settings this trainer cannot honour, before any weights or data load."""
    if args.feature_weight < 0 or args.token_weight < 0 or args.feature_weight + args.token_weight <= 0:
        raise InputError(f"--feature_weight and --token_weight must be >= 0 with a positive sum, got "
                         f"{args.feature_weight} and {args.token_weight}")
    if args.feature_noise < 0:
        raise InputError(f"--feature_noise must be >= 0, got {args.feature_noise}")
    check_head_parallelism(args, "the EAGLE head", "the head is one decoder layer")


def train_eagle(model_args: EagleModelArguments, data_args: DataArguments, args: EagleTrainingArguments) -> Path:
    check_arguments(args)

    def make_head(target, tokenizer, conversations):
        # The head's layer starts as a copy of the target's last layer; its embedding, norm and
        # head are the target's own.
        head = EagleHead.for_target(target, model_args.target_model_name_or_path).float()
        if model_args.draft_vocab_size > 0:
            if args.process_index == 0:
                write_draft_vocab(Path(args.output_dir), tokenizer, target, conversations, model_args.draft_vocab_size)
            head.signature["draft_vocab_file"] = DRAFT_VOCAB_FILE  # the head's config names it
        return head, dict(feature_weight=args.feature_weight, token_weight=args.token_weight, noise=args.feature_noise)

    return train_head_model(model_args.target_model_name_or_path, data_args, args, make_head, EagleTrainer,
                            eagle_quality, "eagle")


main = recipe_main(train_eagle, (EagleModelArguments, DataArguments, EagleTrainingArguments))


if __name__ == "__main__":
    run_cli(main)
