"""How much an SD2 tree drafts each round: a fixed node count, or (``total_token="auto"``) what
the draft's own path probabilities and the target's timed verification costs say pays.

The tree proposer asks a budget three things: whether a round drafts at all (``skip_round``),
whether another level is worth its time (``worth_a_level``) and how many nodes to verify
(``tree_size``); after verification it reports what happened (``round_done``).
"""
from __future__ import annotations

import torch

# Tree sizes (nodes + root) timed for ``total_token="auto"``.
# Up to 128: on a GPU a wide tree verifies nearly as fast as one token; on a CPU the timing rules it out.
AUTO_SIZES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)


class FixedTreeBudget:
    """``total_token - 1`` nodes (the best by path probability), every round, every level."""

    def __init__(self, total_token: int):
        if int(total_token) < 2:
            raise ValueError(f"total_token must be >= 2 or 'auto', got {total_token}")
        self.total_token = int(total_token)

    def reset(self) -> None:
        pass

    def skip_round(self) -> bool:
        return False

    def worth_a_level(self, frontier_scores: torch.Tensor) -> bool:
        return True

    def observe_level(self, seconds: float) -> None:
        pass

    def tree_size(self, scores: torch.Tensor) -> int:
        return min(self.total_token - 1, scores.numel())

    def round_done(self, predicted: float, drafted: int, draft_seconds: float, verified_nodes: int) -> None:
        pass

    def stats(self) -> dict:
        return {}


class AutoTreeBudget:
    """Expected tokens per second decide: the tree size that maximises them (from path
    probabilities calibrated online against what verification accepted, and the timed cost of
    verifying each size on this hardware), levels while they add more than they cost, and no
    draft at all for a while when drafted rounds yield less than plain target steps."""

    def __init__(self, verify_costs: dict[int, float], timing_seconds: float | None = None):
        if not verify_costs:
            raise ValueError("total_token='auto' needs the target's verification costs (engine.time_verification)")
        self.verify_costs = sorted(verify_costs.items())
        self.timing_seconds = timing_seconds  # start-up time spent measuring verify_costs
        self.reset()

    def reset(self) -> None:
        self.calibration = 1.0  # observed / predicted accepted tokens
        self.drafted_rate = None  # EMA of tokens per second over drafted rounds
        self.skip_rounds, self.backoff = 0, 1
        self.draft_seconds = 0.0  # the last drafted round's
        self.level_seconds = 0.0  # EMA of one tree level's drafting time

    def skip_round(self) -> bool:
        if self.skip_rounds > 0:
            self.skip_rounds -= 1
            return True
        return False

    def worth_a_level(self, frontier_scores: torch.Tensor) -> bool:
        """Another level adds at most the frontier's total path probability in accepted tokens
        (calibrated): worth it while that saves more target time than the level costs."""
        gain = self.calibration * float(frontier_scores.exp().sum())
        return gain * self.verify_costs[0][1] >= self.level_seconds

    def observe_level(self, seconds: float) -> None:
        self.level_seconds = 0.8 * self.level_seconds + 0.2 * seconds

    def tree_size(self, scores: torch.Tensor) -> int:
        probs = scores.exp().sort(descending=True).values.cumsum(0).tolist()
        best_n, best_rate = 1, -1.0
        for size, cost in self.verify_costs:
            n = min(size - 1, len(probs))
            if n < 1:
                continue
            rate = (1 + self.calibration * probs[n - 1]) / (self.draft_seconds + cost)
            if rate > best_rate:
                best_n, best_rate = n, rate
        return best_n

    def round_done(self, predicted: float, drafted: int, draft_seconds: float, verified_nodes: int) -> None:
        """``drafted`` of the draft's nodes were accepted where ``predicted`` were expected. While
        drafted rounds yield fewer tokens per second (EMA) than one-token target steps, skip
        drafting for 1, 2, 4, ... 16 rounds, then probe."""
        self.draft_seconds = draft_seconds
        if predicted <= 0:
            return
        self.calibration = 0.9 * self.calibration + 0.1 * (drafted / predicted)
        rate = (1 + drafted) / (draft_seconds + self.verify_cost(verified_nodes + 1))
        self.drafted_rate = rate if self.drafted_rate is None else 0.7 * self.drafted_rate + 0.3 * rate
        if self.drafted_rate * self.verify_cost(1) < 1:
            self.skip_rounds, self.backoff = self.backoff, min(2 * self.backoff, 16)
        else:
            self.backoff = 1

    def verify_cost(self, tokens: int) -> float:
        """Timed cost of verifying ``tokens`` tokens (the smallest timed size that holds them)."""
        return next((cost for size, cost in self.verify_costs if size >= tokens), self.verify_costs[-1][1])

    def stats(self) -> dict:
        """What the tree size was chosen from, measured at start-up."""
        return {"verify_costs_ms": {n: round(1000 * t, 2) for n, t in self.verify_costs},
                "verify_timing_seconds": self.timing_seconds}
