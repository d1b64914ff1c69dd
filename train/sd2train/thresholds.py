"""An SD2 draft's per-exit confidence thresholds from measured agreement: the cascade's rule
(``sd2.draft_spec.drafts_at``) applied to the measured exits, thresholds chosen for agreement or
for the expected speed-up, and written into the draft's config."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch

from sd2.draft_spec import drafts_at

THRESHOLD_GRID = [round(0.05 * i, 2) for i in range(1, 20)]


def choose_thresholds(top1_prob: dict[int, torch.Tensor], right: dict[int, torch.Tensor]) -> list[float]:
    """Per exit but the last: the lowest grid threshold at which tokens the exit is that sure of
    are right at least as often as the last exit is on them. The last exit's threshold is 0."""
    exits = sorted(top1_prob)
    last = exits[-1]
    thresholds = []
    for k in exits[:-1]:
        chosen = THRESHOLD_GRID[-1]
        for tau in THRESHOLD_GRID:
            sure = top1_prob[k] > tau
            if sure.any() and right[k][sure].float().mean() >= right[last][sure].float().mean():
                chosen = tau
                break
        thresholds.append(chosen)
    return thresholds + [0.0]


def cascade(top1_prob, right, thresholds) -> dict:
    """Adaptive exit selection: each token is drafted at the exit the draft's rule picks
    (``sd2.draft_spec.drafts_at``: the first exit surer than its threshold; the last one's is 0)."""
    exits = sorted(top1_prob)
    n = next(iter(right.values())).numel()
    chosen_right = torch.zeros(n, dtype=torch.bool)
    undecided = torch.ones(n, dtype=torch.bool)
    share = {}
    for k, tau in zip(exits, thresholds):
        stop = undecided & drafts_at(top1_prob[k], tau)
        chosen_right |= stop & right[k]
        share[k] = float(stop.float().mean())
        undecided &= ~stop
    return {"thresholds": thresholds, "agreement": float(chosen_right.float().mean()), "share_per_exit": share}


def estimated_speedup(agreement: float, cost: float, max_len: int = 8) -> tuple[float, int]:
    """(speed-up over plain decoding, chain length) of the best chain under a simple model: each
    drafted token is kept with probability ``agreement`` until the first miss, costs ``cost``
    target steps to draft, and verifying a few tokens costs one step (true of a GPU and of a CPU
    up to ~4 tokens): (1 + a + ... + a^L) / (1 + L c) at its best L."""
    best = (1.0, 0)
    for length in range(1, max_len + 1):
        tokens = sum(agreement ** i for i in range(length + 1))
        best = max(best, (tokens / (1 + length * cost), length))
    return best


def speed_thresholds(top1_prob: dict[int, torch.Tensor], right: dict[int, torch.Tensor],
                     exit_costs: dict[int, float]) -> dict:
    """The thresholds (0 or a grid value per early exit; 0 sends every token to that exit) whose
    cascade has the best estimated speed-up, given each exit's cost per draft token in target
    steps; and each exit's own estimate when it drafts alone."""
    exits = sorted(top1_prob)
    best = None
    for combo in itertools.product([0.0, *THRESHOLD_GRID], repeat=len(exits) - 1):
        result = cascade(top1_prob, right, [*combo, 0.0])
        mean_cost = sum(result["share_per_exit"][k] * exit_costs[k] for k in exits)
        speedup, length = estimated_speedup(result["agreement"], mean_cost)
        if best is None or speedup > best["estimated_speedup"]:
            best = {**result, "mean_cost": mean_cost, "estimated_speedup": speedup, "chain_length": length}
    alone = {k: estimated_speedup(float(right[k].float().mean()), exit_costs[k])[0] for k in exits}
    return {**best, "exit_costs": exit_costs, "estimated_speedup_alone": alone}


def write_thresholds(draft_path, thresholds: list[float]) -> None:
    """Record thresholds in the draft's config.json (config.sd2.thresholds)."""
    path = Path(draft_path, "config.json")
    config = json.loads(path.read_text())
    config["sd2"]["thresholds"] = thresholds
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    print(f"[exit-quality] thresholds {thresholds} written to {path}")
