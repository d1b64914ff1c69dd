"""Token Recycling (Luo et al., 2024, "Turning Trash into Treasure"): the target's own top-k
candidates, which every verification pass computes and plain decoding throws away, drafted again
the next time their token comes up. No draft model, no datastore.

The adjacency matrix (vocabulary x k) holds, for each token, the top-k next tokens the target
gave the last time that token was an input row of a verification pass: every row of every pass,
the root and every tree node, rejected ones included (the engine's ``TargetLogitsReader`` hook).
A round's draft tree is a static template of rank paths (``PAPER_TREE``: the paper's 80 nodes over
6 levels; ``(0, 1)`` is the second candidate of the root's first candidate), filled by
breadth-first search from the root: each node's token is its parent token's candidate of that
rank. A node whose parent token has no candidates yet is left out, with its subtree.

Sizing for the hardware. Verifying 80 nodes is nearly free on a big GPU, not on a small CPU; the
verified tree is the likeliest part of the template under a budget (``FixedTreeBudget``: a node
count; ``AutoTreeBudget``: SD2's auto tree, the count that maximises expected tokens per second
from the target's timed verification costs). A node's likelihood is how often it *would* have been
accepted in the rounds so far (its token equals the real continuation along its path: known for
every template node after each round, verified or not), from a prior by rank.

Starting state. The matrix starts empty for every question (``warm=False``, the default), so an
answer depends only on its own question: resumed, sharded and reordered runs draft exactly the
same trees and report the same accept lengths. ``warm=True`` keeps it (and the node statistics)
across questions, as the reference implementations do (Spec-Bench's ``inference_recycling.py``
allocates one matrix for the whole run, warm-up runs included): faster once warm, but a
question's speed then depends on which questions ran before it.
"""
from __future__ import annotations

import numpy as np
import torch

from ..types import DraftTree
from ..tree.budget import AutoTreeBudget, FixedTreeBudget

# The paper's static tree ("2.2.2"): rank paths per level, one digit per step.
_PAPER_LEVELS = (
    "0 1 2 3 4 5 6 7",
    "00 01 02 03 04 05 06 07 10 11 12 13 20 21 22 30 31 40 50 60 70",
    "000 001 002 003 004 005 006 007 010 011 012 020 021 030 040 050 060 070 100 101 110 200 300 400 500",
    "0000 0001 0002 0003 0004 0010 0011 0020 0030 0040 0100 0200 1000 2000 3000",
    "00000 00001 00002 00010 00020 00100 01000 10000",
    "000000 000001 000100",
)
PAPER_TREE: tuple[tuple[int, ...], ...] = tuple(tuple(int(c) for c in path)
                                                for level in _PAPER_LEVELS for path in level.split())

# Prior chance that a candidate of each rank is the target's next token (before any round is seen).
PRIOR_RANK_RATES = (0.5, 0.15, 0.08, 0.05, 0.04, 0.03, 0.02, 0.02)
PRIOR_ROUNDS = 4.0  # how many rounds the prior weighs


class AdjacencyMatrix:
    """Top-k next-token candidates per token (-1: none yet), updated row by row."""

    def __init__(self, vocab_size: int, k: int = 8):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"Token Recycling needs k >= 1 candidates per token, got {k!r}")
        self.k = k
        self.table = np.full((vocab_size, k), -1, dtype=np.int64)

    def clear(self) -> None:
        self.table.fill(-1)

    def update(self, tokens: list[int], candidates: np.ndarray) -> None:
        """``candidates[i]``: the target's top-k after input row ``tokens[i]``. A token that is
        the input of several rows keeps its last row's (as the rows of a pass are written in order)."""
        last = {t: i for i, t in enumerate(tokens)}
        self.table[list(last)] = candidates[list(last.values())]

    def update_from_logits(self, tokens: torch.Tensor, logits: torch.Tensor) -> None:
        """Every verified row's top-k (a ``TargetLogitsReader``: the pass's input tokens, its logits)."""
        self.update(tokens.tolist(), logits.topk(self.k, dim=-1).indices.cpu().numpy())

    def expand(self, root: int, template: tuple[tuple[int, ...], ...], parents: list[int]) -> list[int]:
        """Breadth-first fill of ``template`` (parents before children) from ``root``: each node's
        token, -1 where its parent has no candidate of that rank."""
        tokens: list[int] = []
        for path, parent in zip(template, parents):
            above = root if parent < 0 else tokens[parent]
            tokens.append(int(self.table[above, path[-1]]) if above >= 0 else -1)
        return tokens


def template_parents(template) -> list[int]:
    """Each rank path's parent index in ``template`` (-1: the root), checking it is prefix-closed
    and ordered parents first."""
    index = {}
    parents = []
    for i, path in enumerate(template):
        path = tuple(path)
        if not path or path in index or (len(path) > 1 and path[:-1] not in index):
            raise ValueError(f"a recycling tree template lists distinct rank paths, each after its parent; "
                             f"bad entry {list(path)}")
        index[path] = i
        parents.append(index[path[:-1]] if len(path) > 1 else -1)
    return parents


def prior_rates(template, rank_rates=PRIOR_RANK_RATES) -> np.ndarray:
    rate = [rank_rates[min(r, len(rank_rates) - 1)] for r in range(max(max(p) for p in template) + 1)]
    return np.array([np.prod([rate[r] for r in path]) for path in template])


class RecyclingDrafter:
    """``budget``: how many template nodes to verify (a ``FixedTreeBudget`` of the whole template
    by default, or SD2's ``AutoTreeBudget``)."""

    def __init__(self, vocab_size: int, k: int = 8, template=PAPER_TREE,
                 budget: FixedTreeBudget | AutoTreeBudget | None = None, warm: bool = False):
        self.matrix = AdjacencyMatrix(vocab_size, k)
        self.template = tuple(tuple(int(r) for r in path) for path in template)
        self.parents = template_parents(self.template)
        if max(max(p) for p in self.template) >= k:
            raise ValueError(f"the recycling tree template uses rank {max(max(p) for p in self.template)}, "
                             f"but the matrix keeps only k={k} candidates per token")
        self.depths = np.array([len(p) for p in self.template])
        self.prior = prior_rates(self.template)
        self.budget = budget if budget is not None else FixedTreeBudget(len(self.template) + 1)
        self.warm = warm
        self.hits = np.zeros(len(self.template))
        self.rounds = 0
        self.filled: list[int] = []  # this round's template tokens
        self.verified = 0  # nodes this round's tree holds
        self.predicted = 0.0
        self.counts = {"rounds": 0, "drafted_tokens": 0, "accepted_tokens": 0, "skipped_rounds": 0}

    def reset(self, prompt_ids: torch.Tensor) -> None:
        if not self.warm:
            self.matrix.clear()
            self.hits[:] = 0
            self.rounds = 0
            self.budget.reset()
        self.filled, self.verified, self.predicted = [], 0, 0.0
        self.counts = {"rounds": 0, "drafted_tokens": 0, "accepted_tokens": 0, "skipped_rounds": 0}

    def rates(self) -> np.ndarray:
        """Each template node's estimated chance of being accepted."""
        return (self.hits + PRIOR_ROUNDS * self.prior) / (self.rounds + PRIOR_ROUNDS)

    def propose(self, context: torch.Tensor, max_depth: int | None = None,
                generator: torch.Generator | None = None) -> DraftTree:
        self.filled = self.matrix.expand(int(context[-1]), self.template, self.parents)
        self.verified, self.predicted = 0, 0.0
        if self.budget.skip_round():  # auto budget: drafted rounds were slower than plain steps lately
            self.counts["skipped_rounds"] += 1
            return DraftTree.empty(context.device)
        usable = np.array(self.filled) >= 0
        if max_depth is not None:
            usable &= self.depths <= max_depth
        candidates = np.flatnonzero(usable)
        if candidates.size == 0:
            return DraftTree.empty(context.device)
        rates = self.rates()
        # A child is never likelier than its parent (its hits need the parent's), and the stable
        # sort keeps template order on ties, so every prefix of this order is a tree.
        order = candidates[np.argsort(-rates[candidates], kind="stable")]
        n = self.budget.tree_size(torch.from_numpy(np.log(rates[order])))
        chosen = sorted(order[:n].tolist())
        self.verified, self.predicted = len(chosen), float(rates[chosen].sum())
        self.counts["rounds"] += 1
        self.counts["drafted_tokens"] += len(chosen)
        return self.tree_of(chosen, context.device)

    def tree_of(self, nodes: list[int], device) -> DraftTree:
        """The template nodes ``nodes`` (parents included, in template order) as a draft tree."""
        new = {old: i for i, old in enumerate(nodes)}
        tokens = [self.filled[i] for i in nodes]
        parents = [new[self.parents[i]] if self.parents[i] >= 0 else -1 for i in nodes]
        long = dict(dtype=torch.long, device=device)
        return DraftTree(torch.tensor(tokens, **long), torch.tensor(parents, **long))

    def target_logits(self, tokens: torch.Tensor, logits: torch.Tensor) -> None:
        """Every verified row's top-k into the matrix (``TargetLogitsReader``)."""
        self.matrix.update_from_logits(tokens, logits)

    def accepted(self, context: torch.Tensor, num_new: int, num_drafted: int) -> None:
        """Count, for every template node, whether its token was the real continuation."""
        if self.filled:
            new = context[len(context) - num_new:].tolist()
            right = np.zeros(len(self.template), dtype=bool)
            for i, (token, parent, depth) in enumerate(zip(self.filled, self.parents, self.depths)):
                right[i] = depth <= len(new) and token == new[depth - 1] and (parent < 0 or right[parent])
            self.hits += right
            self.rounds += 1
        if self.verified:
            self.counts["accepted_tokens"] += num_drafted
            self.budget.round_done(self.predicted, num_drafted, 0.0, self.verified)

    def stats(self) -> dict:
        rounds = self.counts["rounds"]
        return {**self.counts, "mean_draft_size": self.counts["drafted_tokens"] / rounds if rounds else 0.0,
                "matrix_rows_filled": int((self.matrix.table[:, 0] >= 0).sum()), **self.budget.stats()}
