"""The sorted (SoFT) loss: a weighted mean over exits of next-token losses, norm and head shared.

Per exit ``k`` the loss is the shifted cross-entropy of ``lm_head(norm(h_k))`` against the labels
(-100 = ignored), optionally mixed with a KL divergence to the frozen target's next-token
distribution (distillation): ``(1 - a) * CE + a * KL(p_target || p_exit)``. The head is applied
only at positions that carry a label: on a 49k vocabulary it is the most expensive part.
With ``vocab_ids`` (the draft vocabulary of make_draft) both the exits and the target are
restricted to those tokens, as a reduced draft head sees them at inference; labels outside the
subset are ignored by the cross-entropy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sd2train.exits import exit_logits, exit_states, head_logits, unwrap
from sd2train.preprocess import IGNORE_INDEX


@dataclass
class SortedLoss:
    loss: torch.Tensor
    per_exit: dict[int, float] = field(default_factory=dict)  # the (mixed) loss of each exit
    num_tokens: int = 0


def label_positions(labels: torch.Tensor):
    """(mask over positions 0..T-2 that predict a labelled next token, those next tokens)."""
    next_labels = labels[:, 1:]
    mask = next_labels != IGNORE_INDEX
    return mask, next_labels[mask]


@torch.no_grad()
def target_logits_at(target, input_ids, attention_mask, mask, vocab_ids=None) -> torch.Tensor:
    """The frozen target's next-token logits at the masked positions, (M, vocab)."""
    hidden = target.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return head_logits(target, hidden[:, :-1][mask], vocab_ids)


def subset_labels(next_tokens: torch.Tensor, vocab_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Token ids -> their index in ``vocab_ids`` (IGNORE_INDEX when absent)."""
    index = torch.full((vocab_size,), IGNORE_INDEX, dtype=torch.long, device=next_tokens.device)
    index[vocab_ids] = torch.arange(len(vocab_ids), device=next_tokens.device)
    return index[next_tokens]


def _vocab_size(model) -> int:
    return unwrap(model).get_output_embeddings().weight.shape[0]


def exit_weights(exits: list[int], weights: list[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * len(exits)
    if len(weights) != len(exits):
        raise ValueError(f"{len(weights)} exit weights given for {len(exits)} exits {exits}")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"exit weights must be >= 0 with a positive sum, got {weights}")
    return [float(w) for w in weights]


def sorted_loss(model, input_ids, labels, attention_mask=None, exits=(12,), weights=None,
                target=None, distill_weight: float = 0.0, vocab_ids: torch.Tensor | None = None) -> SortedLoss:
    """The weighted mean over ``exits`` of each exit's next-token loss (see module doc)."""
    exits = list(exits)
    weights = exit_weights(exits, weights)
    if not 0.0 <= distill_weight <= 1.0:
        raise ValueError(f"distill_weight must be in [0, 1], got {distill_weight}")
    if distill_weight > 0 and target is None:
        raise ValueError("distillation needs the target model")
    states = exit_states(model, exits, input_ids, attention_mask)
    mask, next_tokens = label_positions(labels)
    if next_tokens.numel() == 0:  # nothing labelled (e.g. truncated away): a zero that keeps the graph
        zero = sum(h.sum() for h in states.values()) * 0.0
        return SortedLoss(zero, {k: 0.0 for k in exits}, 0)
    if vocab_ids is not None:
        vocab_ids = vocab_ids.to(input_ids.device)
        next_tokens = subset_labels(next_tokens, vocab_ids, _vocab_size(model))
    target_log_probs = None
    if distill_weight > 0:
        target_log_probs = F.log_softmax(
            target_logits_at(target, input_ids, attention_mask, mask, vocab_ids).float(), -1)

    total, per_exit = 0.0, {}
    for k, weight in zip(exits, weights):
        if weight == 0:
            continue
        logits = exit_logits(model, states[k][:, :-1][mask], vocab_ids).float()
        loss = 0.0
        if distill_weight < 1:
            # A sum over the kept labels / their count: stays finite when the subset drops them all.
            ce = F.cross_entropy(logits, next_tokens, ignore_index=IGNORE_INDEX, reduction="sum")
            loss = (1 - distill_weight) * ce / (next_tokens != IGNORE_INDEX).sum().clamp(min=1)
        if target_log_probs is not None:
            kl = F.kl_div(F.log_softmax(logits, -1), target_log_probs, log_target=True, reduction="batchmean")
            loss = loss + distill_weight * kl
        per_exit[k] = float(loss.detach())
        total = total + weight * loss
    return SortedLoss(total / sum(weights), per_exit, int(next_tokens.numel()))
