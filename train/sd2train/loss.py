"""The sorted (SoFT) loss: a weighted mean over exits of next-token losses, norm and head shared.

Per exit ``k`` the loss is the shifted cross-entropy of ``lm_head(norm(h_k))`` against the labels
(-100 = ignored), optionally mixed with a KL divergence to the frozen target's next-token
distribution (distillation): ``(1 - a) * CE + a * KL(p_target || p_exit)``. The head is applied
only at positions that carry a label: on a 49k vocabulary it is the most expensive part.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sd2train.exits import exit_logits, exit_states

IGNORE_INDEX = -100


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
def target_logits_at(target, input_ids, attention_mask, mask) -> torch.Tensor:
    """The frozen target's next-token logits at the masked positions, (M, vocab)."""
    hidden = target.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return target.get_output_embeddings()(hidden[:, :-1][mask])


def exit_weights(exits: list[int], weights: list[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * len(exits)
    if len(weights) != len(exits):
        raise ValueError(f"{len(weights)} exit weights given for {len(exits)} exits {exits}")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"exit weights must be >= 0 with a positive sum, got {weights}")
    return [float(w) for w in weights]


def sorted_loss(model, input_ids, labels, attention_mask=None, exits=(12,), weights=None,
                target=None, distill_weight: float = 0.0) -> SortedLoss:
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
    target_log_probs = None
    if distill_weight > 0:
        target_log_probs = F.log_softmax(target_logits_at(target, input_ids, attention_mask, mask).float(), -1)

    total, per_exit = 0.0, {}
    for k, weight in zip(exits, weights):
        if weight == 0:
            continue
        logits = exit_logits(model, states[k][:, :-1][mask]).float()
        loss = 0.0
        if distill_weight < 1:
            loss = (1 - distill_weight) * F.cross_entropy(logits, next_tokens)
        if target_log_probs is not None:
            kl = F.kl_div(F.log_softmax(logits, -1), target_log_probs, log_target=True, reduction="batchmean")
            loss = loss + distill_weight * kl
        per_exit[k] = float(loss.detach())
        total = total + weight * loss
    return SortedLoss(total / sum(weights), per_exit, int(next_tokens.numel()))
