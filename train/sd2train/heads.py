"""Train Medusa-1 or Hydra draft heads for a frozen target, on the data SoFT and EAGLE train on.

    python -m sd2train.heads --kind medusa|hydra --target_model_name_or_path models/smollm2-135m-instruct \
        --output_dir models/medusa-smollm2-135m --data_path outputs/target_replies/smollm2-135m-instruct-n128.jsonl \
        [--num_heads 4] [--draft_vocab_size 8192] [--head_loss_decay 0.8] [--model_max_length 2048] \
        [HF TrainingArguments]

The heads (``sd2.draft_heads``) read x_t, the target's final norm over f_t (its last decoder
layer's output at position t), which the frozen target computes on the fly each batch (a forward
hook on its last decoder layer; no feature cache on disk). Head k (from 0) predicts the token
k + 2 positions after t: the target's own head predicts t + 1. A Hydra head k also reads the
embeddings of the k + 1 tokens at t+1..t+k+1, in training the true ones (teacher forcing).

The loss is Medusa-1's, sum_k decay^k CE_k (decay 0.8): CE_k is head k's mean cross-entropy
against the token k + 2 after t, over the rows t where that token is an assistant token (on the
target's own greedy replies this is self-distillation). With a draft vocabulary (by default the
8,192 most frequent assistant tokens of the training conversations, special and stop tokens first,
as ``make_draft.draft_vocab`` counts them) each projection scores only those tokens, starting from
the target's head rows for them, and a token outside it is left out of its head's loss.

Data and arguments are the SoFT trainer's (``sd2train.train``); under torchrun the heads train with
FSDP (``train/configs/fsdp_heads.json``) or DeepSpeed ZeRO-2 like any HF Trainer. At the end the
heads are saved as their own folder (``DraftHeads.save``: config naming the target and the draft
vocabulary, safetensors) with the target's tokenizer and the loss log, and measured on held-out
prompts (``sd2train.heads_quality``: heads_quality.json, whose per-rank accuracies shape Medusa's
static tree at inference).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from sd2.draft_heads import KINDS, DraftHeads
from sd2train.errors import InputError, run_cli
from sd2train.exits import last_layer_states, unwrap
from sd2train.head_training import HeadModelArguments, check_head_parallelism, train_head_model
from sd2train.heads_quality import heads_quality
from sd2train.make_draft import draft_vocab
from sd2train.preprocess import IGNORE_INDEX
from sd2train.recipes import recipe_main
from sd2train.train import DataArguments, DraftTrainingArguments, PartsLoggingTrainer


@dataclass
class HeadsModelArguments(HeadModelArguments):
    kind: str = field(default="medusa", metadata={"help": "'medusa' (Medusa-1) or 'hydra' (each head also reads "
                                                          "the tokens between the target's and its own)"})
    num_heads: int = field(default=4, metadata={"help": "K: head k (from 0) drafts the token k + 2 after the "
                                                        "feature's"})


@dataclass
class HeadsTrainingArguments(DraftTrainingArguments):
    head_loss_decay: float = field(default=0.8, metadata={"help": "Medusa-1's weighting: head k's loss (k from 0) "
                                                                  "counts decay**k"})
    # The heads' forward takes each head's rows, not the batch's columns: keep them all.
    remove_unused_columns: bool = False


class TrainedHeads(DraftHeads):
    """DraftHeads with a ``forward`` over every head at once: DDP, FSDP and DeepSpeed act on a
    module's forward (FSDP gathers the sharded weights there), not on ``head_logits``."""

    def forward(self, rows: list[tuple[torch.Tensor, torch.Tensor | None]]) -> list[torch.Tensor]:
        """``rows[k]`` = (normed features, Hydra's prefix ids or None) of head k's rows -> its logits."""
        return [self.head_logits(k, x, prefix_ids) for k, (x, prefix_ids) in enumerate(rows)]


@dataclass
class HeadsLoss:
    loss: torch.Tensor
    per_head: list[float]  # each head's mean cross-entropy, before weighting
    rows: list[int]  # the rows each head's loss counts


def draft_index_of(draft_vocab: list[int], vocab_size: int) -> torch.Tensor:
    """(vocab_size,) token id -> its index in the draft vocabulary, IGNORE_INDEX for tokens outside it."""
    index = torch.full((vocab_size,), IGNORE_INDEX, dtype=torch.long)
    index[torch.tensor(draft_vocab)] = torch.arange(len(draft_vocab))
    return index


def head_targets(labels: torch.Tensor, draft_index: torch.Tensor | None) -> torch.Tensor:
    """``labels`` as the heads' output indices: unchanged for a full-vocabulary head, else the
    draft-vocabulary index, IGNORE_INDEX where the token is outside the draft vocabulary."""
    if draft_index is None:
        return labels
    return torch.where(labels != IGNORE_INDEX, draft_index[labels.clamp(min=0)], IGNORE_INDEX)


def head_rows(x, input_ids, targets, k: int, hydra: bool):
    """Head k's training rows of a batch: (normed features, Hydra's prefix ids or None, wanted
    output index), one row per t whose token t + k + 2 counts. Hydra's prefix at t is the true
    tokens t+1..t+k+1."""
    span = input_ids.shape[1] - k - 2  # rows 0..span-1 have a token k + 2 after them
    if span <= 0:
        empty = input_ids.new_zeros((0, k + 1)) if hydra else None
        return x.new_zeros((0, x.shape[-1])), empty, input_ids.new_zeros(0)
    wanted = targets[:, k + 2:]
    counted = wanted != IGNORE_INDEX
    prefix = input_ids.unfold(1, k + 1, 1)[:, 1:span + 1][counted] if hydra else None
    return x[:, :span][counted], prefix, wanted[counted]


def heads_loss(model, x, input_ids, labels, decay: float = 0.8, draft_index: torch.Tensor | None = None) -> HeadsLoss:
    """Medusa-1's loss (see the module doc) of a batch: ``x`` (B, T, H) the target's normed
    features of ``input_ids`` (B, T), ``labels`` (B, T) IGNORE_INDEX where not an assistant token,
    ``draft_index`` from ``draft_index_of`` for heads over a draft vocabulary. ``model`` is the
    heads (a TrainedHeads), maybe wrapped by DDP, FSDP or DeepSpeed: its forward runs through the wrapper."""
    heads = unwrap(model)
    targets = head_targets(labels, draft_index)
    rows = [head_rows(x, input_ids, targets, k, heads.kind == "hydra") for k in range(heads.num_heads)]
    logits = model([(features, prefix) for features, prefix, _ in rows])
    loss, per_head = 0.0, []
    for k, (head_logits, (_, _, wanted)) in enumerate(zip(logits, rows)):
        # No row counts (all truncated away): a zero that keeps the graph.
        ce = F.cross_entropy(head_logits.float(), wanted) if len(wanted) else head_logits.sum() * 0.0
        loss = loss + decay ** k * ce
        per_head.append(float(ce.detach()))
    return HeadsLoss(loss, per_head, [len(wanted) for _, _, wanted in rows])


class HeadsTrainer(PartsLoggingTrainer):
    """HF Trainer for the heads: each batch's features come from the frozen ``target``; logs each
    head's cross-entropy beside the weighted loss."""

    def __init__(self, *args, target, decay=0.8, draft_index=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.target, self.decay, self.draft_index = target, decay, draft_index

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        input_ids = inputs["input_ids"]
        with torch.no_grad():
            features = last_layer_states(self.target, input_ids, inputs.get("attention_mask"))
            # The heads train in float32; the frozen target may run in bfloat16.
            x = unwrap(model).normed(features).float()
        if self.draft_index is not None and self.draft_index.device != input_ids.device:
            self.draft_index = self.draft_index.to(input_ids.device)
        result = heads_loss(model, x, input_ids, inputs["labels"], self.decay, self.draft_index)
        self.record(**{f"loss_head{k}": ce for k, ce in enumerate(result.per_head)})
        return (result.loss, None) if return_outputs else result.loss


def check_arguments(model_args: HeadsModelArguments, args: HeadsTrainingArguments) -> None:
    """Clear errors for settings this trainer cannot honour, before any weights or data load."""
    if model_args.kind not in KINDS:
        raise InputError(f"--kind must be one of {', '.join(KINDS)}, got {model_args.kind!r}")
    if model_args.num_heads < 1:
        raise InputError(f"--num_heads must be >= 1, got {model_args.num_heads}")
    if model_args.draft_vocab_size < 0:
        raise InputError(f"--draft_vocab_size must be >= 0 (0 = the whole vocabulary), got "
                         f"{model_args.draft_vocab_size}")
    if args.head_loss_decay <= 0:
        raise InputError(f"--head_loss_decay must be > 0, got {args.head_loss_decay}")
    check_head_parallelism(args, "draft heads", "the heads have no decoder layers",
                           "FSDP (train/configs/fsdp_heads.json)")


def train_heads(model_args: HeadsModelArguments, data_args: DataArguments, args: HeadsTrainingArguments) -> Path:
    check_arguments(model_args, args)

    def make_head(target, tokenizer, conversations):
        vocab = None
        if model_args.draft_vocab_size:  # counted on the text trained on, as the EAGLE trainer counts its own
            vocab = draft_vocab(tokenizer, conversations, model_args.draft_vocab_size, target.generation_config)
        # The heads start from the target's head rows; they read its norm and embedding.
        heads = TrainedHeads.for_target(model_args.kind, target, model_args.num_heads,
                                        model_args.target_model_name_or_path, vocab).float()
        return heads, dict(decay=args.head_loss_decay,
                           draft_index=draft_index_of(vocab, target.config.vocab_size) if vocab else None)

    return train_head_model(model_args.target_model_name_or_path, data_args, args, make_head, HeadsTrainer,
                            heads_quality, f"heads: {model_args.num_heads} {model_args.kind} heads")


main = recipe_main(train_heads, (HeadsModelArguments, DataArguments, HeadsTrainingArguments))


if __name__ == "__main__":
    run_cli(main)
