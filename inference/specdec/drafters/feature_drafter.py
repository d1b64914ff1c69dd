"""What EAGLE's and Medusa/Hydra's drafters share: a round drafted by a tree proposer over a draft
that reads the target's features (``TargetHiddenReader``), with the same counts in the stats."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..tree.budget import FixedTreeBudget
from ..tree.dynamic import TreeProposer
from ..tree.proposal import Proposal
from ..tree.static import StaticTreeProposer, static_tree_choices
from ..types import DraftTree


def tree_proposer(draft, tree: str, total_token: int, tokens_deep: int, top_k: int, rank_accuracy):
    """A dynamic tree (EAGLE-2's: top-k expansion by path probability, reranked to ``total_token``
    nodes with the root) or a static one (the ``total_token`` - 1 likeliest rank paths by
    ``rank_accuracy``), at most ``tokens_deep`` drafted tokens deep."""
    if tree not in ("static", "dynamic"):
        raise ValueError(f"tree must be 'static' or 'dynamic', got {tree!r}")
    if total_token < 2:
        raise ValueError(f"total_token counts the root too: need >= 2, got {total_token}")
    if tree == "dynamic":
        if tokens_deep < 2:
            raise ValueError("a dynamic tree drafts at least 2 tokens deep")
        return TreeProposer(draft, FixedTreeBudget(total_token), tokens_deep - 1, top_k)  # levels after the root's
    return StaticTreeProposer(draft, static_tree_choices(rank_accuracy, total_token - 1, tokens_deep))


def reported_rank_accuracy(report: Path, key: str = "rank_accuracy") -> list[list[float]] | None:
    """The measured rank accuracies (how often the target's token is the draft's k-th choice) in a
    held-out report beside the heads (``heads_quality.json``: one list per head) or the EAGLE head
    (``eagle_quality.json``: its depth-1 list, serving every depth), one list per depth as
    ``static_tree_choices`` takes them; None where the report or ``key`` is missing (a report
    written before they were measured). A rank never seen right still gets a small chance, so the
    tree stays well defined."""
    if not report.is_file():
        return None
    measured = json.loads(report.read_text()).get(key)
    if not measured:
        return None
    per_depth = measured if isinstance(measured[0], list) else [measured]
    return [[max(a, 1e-4) for a in rates] for rates in per_depth]


class FeatureTreeDrafter:
    """Subclasses set ``self.draft`` and ``self.proposer`` and say when a feature is at hand."""

    draft: object
    proposer: object

    def __init__(self):
        self.round = Proposal.empty()
        self.counts: dict = {}
        self.draft_seconds = 0.0

    def ready(self, context: torch.Tensor) -> bool:
        """Whether the feature of the token before the root is at hand (not before the first step
        of a one-token prompt)."""
        raise NotImplementedError

    def end_round(self) -> None:
        """Drop what the round left in the draft (tree rows drafted from predicted features)."""

    def start_counts(self) -> None:
        self.counts = {"drafted_tokens": 0, "accepted_tokens": 0, "rounds": 0}

    @torch.inference_mode()
    def propose(self, context: torch.Tensor, max_depth: int | None = None,
                generator: torch.Generator | None = None) -> DraftTree:
        if not self.ready(context):  # a plain target step first
            self.round = Proposal.empty()
            return self.round.as_tree(context.device)
        start = time.perf_counter()
        self.round = self.proposer.propose(context, max_depth or self.proposer.max_rows, generator)
        self.draft_seconds = time.perf_counter() - start
        self.counts["drafted_tokens"] += len(self.round.tokens)
        self.counts["rounds"] += 1
        return self.round.as_tree(context.device)

    @torch.inference_mode()
    def accepted(self, context: torch.Tensor, num_new: int, num_drafted: int) -> None:
        self.counts["accepted_tokens"] += num_drafted
        if self.round.tokens:
            self.end_round()
            self.proposer.round_done(self.round, num_drafted, self.draft_seconds)

    def stats(self) -> dict:
        rounds = self.counts.get("rounds", 0)
        return {**self.counts, "mean_draft_size": self.counts.get("drafted_tokens", 0) / rounds if rounds else 0.0}
