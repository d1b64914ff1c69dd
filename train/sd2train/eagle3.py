"""Train an EAGLE-3 draft head for a target (EAGLE-3, Li et al. 2025), on the data SoFT trains on.

    python -m sd2train.eagle3 --target_model_name_or_path models/smollm2-135m-instruct \
        --output_dir models/eagle3-smollm2-135m --data_path outputs/target_replies/smollm2-135m-instruct-n128.jsonl \
        [--ttt_steps 7 --step_weight_decay 0.8] [--feature_layers 2,15,27] [--draft_vocab_size 8192] \
        [--model_max_length 2048] [HF TrainingArguments]

The head (``sd2.eagle3_head``) reads a fusion of the target's states after three layers (2, L // 2,
L - 3 by default) and the next token, and scores the draft vocabulary. The target is frozen; its
states and logits are computed on the fly each batch (forward hooks on those layers, no cache on
disk). **Training-time test**: the head is unrolled ``ttt_steps`` steps over each sequence, step j
reading its own step-(j-1) outputs in place of the target's fused features (``Eagle3Head.unroll``),
and EAGLE-3's loss is

    sum_j step_weight_decay^j * CE(target's distribution over the draft vocabulary, head's)   at step j

at the rows whose predicted token is an assistant token (label != -100) and whose target argmax is
in the draft vocabulary (the target's distribution renormalised over it: forward KL up to a
constant). Data and arguments are the SoFT trainer's (``sd2train.train``); under torchrun it runs
with FSDP or DeepSpeed ZeRO-2 like any HF Trainer. At the end the head is saved as its own folder
(``Eagle3Head.save``: config naming the target, safetensors, draft_vocab.json) with the target's
tokenizer and the loss log, and its held-out agreement at depths 1..3 is measured
(``sd2train.exit_quality --eagle``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from sd2.eagle3_head import Eagle3Head, check_feature_layers, default_feature_layers
from sd2train.errors import InputError, bad_setting, run_cli
from sd2train.eagle import EagleTrainer
from sd2train.exit_quality import eagle_quality
from sd2train.exits import parse_int_list, target_states, unwrap
from sd2train.head_training import HeadModelArguments, check_head_parallelism, train_head_model
from sd2train.make_draft import draft_vocab
from sd2train.preprocess import IGNORE_INDEX
from sd2train.recipes import recipe_main
from sd2train.train import DataArguments, DraftTrainingArguments


@dataclass
class Eagle3ModelArguments(HeadModelArguments):
    feature_layers: str = field(default="", metadata={"help": "the three fused layer counts (default EAGLE-3's: "
                                                              "2, L // 2, L - 3)"})


@dataclass
class Eagle3TrainingArguments(DraftTrainingArguments):
    ttt_steps: int = field(default=7, metadata={"help": "training-time test: steps the head is unrolled over its own "
                                                        "outputs (EAGLE-3's 7)"})
    step_weight_decay: float = field(default=0.8, metadata={"help": "step j's loss weighs this ** j (EAGLE-3's 0.8)"})
    # The head's forward takes (input_ids, features), not the batch's columns: keep them all.
    remove_unused_columns: bool = False


@dataclass
class Eagle3Loss:
    loss: torch.Tensor
    step_losses: list[float]  # each step's cross-entropy, before weighting
    step_accuracies: list[float]  # each step's top-1 agreement with the target on the counted rows
    num_rows: int  # rows that count at step 0


def eagle3_loss(head, features, target_logits, input_ids, labels, steps: int, decay: float = 0.8) -> Eagle3Loss:
    """EAGLE-3's loss (see the module doc) for a batch: ``features`` (B, T, 3H) and ``target_logits``
    (B, T, V) the target's of ``input_ids`` (B, T); ``labels`` (B, T), -100 where not an assistant
    token. ``head`` may be wrapped (DDP, FSDP, DeepSpeed): its unroll runs through the wrapper.

    Row t of step j predicts x_{t+j+2}: it is compared with the target's distribution at position
    t+j+1 and counts when labels[t+j+2] != -100 and the target's argmax there is a draft token."""
    inner = unwrap(head)
    vocab_ids = inner.vocab_ids
    length = input_ids.shape[1]
    steps = min(steps, length - 2)
    with torch.no_grad():
        in_vocab = torch.zeros(target_logits.shape[-1], dtype=torch.bool, device=vocab_ids.device)
        in_vocab[vocab_ids] = True
        drafted_argmax = in_vocab[target_logits.argmax(-1)]  # (B, T)
        target_log_probs = F.log_softmax(target_logits[..., vocab_ids].float(), -1)  # over the draft vocabulary
    outputs = head(input_ids, features, steps, logits=False)
    total, step_losses, step_accuracies, rows = None, [], [], 0
    for j, out in enumerate(outputs):
        counted = (labels[:, j + 2:] != IGNORE_INDEX) & drafted_argmax[:, j + 1:-1]  # rows t < T - j - 2
        if j == 0:
            rows = int(counted.sum())
        if not counted.any():
            part = out.sum() * 0.0  # nothing to learn here: a zero that keeps the graph
            step_losses.append(0.0)
            step_accuracies.append(0.0)
        else:
            log_q = F.log_softmax(inner.logits(out[:, :length - j - 2][counted]).float(), -1)
            p_log = target_log_probs[:, j + 1:-1][counted]
            part = -(p_log.exp() * log_q).sum(-1).mean()
            step_losses.append(float(part.detach()))
            step_accuracies.append(float((log_q.argmax(-1) == p_log.argmax(-1)).float().mean()))
        total = decay ** j * part if total is None else total + decay ** j * part
    return Eagle3Loss(total, step_losses, step_accuracies, rows)


class Eagle3Trainer(EagleTrainer):
    """HF Trainer for an EAGLE-3 head: each batch's features and logits come from the frozen
    ``target``; logs each step's loss and agreement and the target's share of the step time."""

    def __init__(self, *args, target, steps: int, decay: float, **kwargs):
        super().__init__(*args, target=target, **kwargs)
        self.steps, self.decay = steps, decay

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from sd2train.eagle import _synchronize

        started = time.perf_counter()
        with torch.no_grad():
            features, logits = target_states(self.target, unwrap(model).feature_layers, inputs["input_ids"],
                                             inputs.get("attention_mask"))
        _synchronize(features.device)
        target_seconds = time.perf_counter() - started
        self.seconds["target_forward"] += target_seconds
        result = eagle3_loss(model, features, logits, inputs["input_ids"], inputs["labels"], self.steps, self.decay)
        parts = {f"loss_step{j}": v for j, v in enumerate(result.step_losses)}
        parts.update({f"acc_step{j}": v for j, v in enumerate(result.step_accuracies)})
        self.record(**parts, target_forward_s=target_seconds)
        return (result.loss, None) if return_outputs else result.loss


def check_arguments(args: Eagle3TrainingArguments) -> None:
    """Clear errors for settings this trainer cannot honour, before any weights or data load."""
    if args.ttt_steps < 1:
        raise InputError(f"--ttt_steps must be >= 1, got {args.ttt_steps}")
    if not 0 < args.step_weight_decay <= 1:
        raise InputError(f"--step_weight_decay must be in (0, 1], got {args.step_weight_decay}")
    check_head_parallelism(args, "the EAGLE-3 head", "the head is one decoder layer")


def train_eagle3(model_args: Eagle3ModelArguments, data_args: DataArguments, args: Eagle3TrainingArguments) -> Path:
    check_arguments(args)

    def make_head(target, tokenizer, conversations):
        num_layers = target.config.num_hidden_layers
        with bad_setting("--feature_layers"):
            layers = check_feature_layers(parse_int_list(model_args.feature_layers, "--feature_layers")
                                          if model_args.feature_layers else default_feature_layers(num_layers),
                                          num_layers)
        vocab = None
        if model_args.draft_vocab_size > 0:  # the same on every process: counted on the same conversations
            vocab = draft_vocab(tokenizer, conversations, model_args.draft_vocab_size, target.generation_config)
        # The head starts as copies of the target's parts; its embedding is the target's own.
        head = Eagle3Head.for_target(target, vocab, layers, model_args.target_model_name_or_path).float()
        return head, dict(steps=args.ttt_steps, decay=args.step_weight_decay)

    return train_head_model(model_args.target_model_name_or_path, data_args, args, make_head, Eagle3Trainer,
                            eagle_quality, f"eagle3, {args.ttt_steps} unrolled steps each")


main = recipe_main(train_eagle3, (Eagle3ModelArguments, DataArguments, Eagle3TrainingArguments))


if __name__ == "__main__":
    run_cli(main)
