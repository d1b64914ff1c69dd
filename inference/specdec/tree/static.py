"""A static tree of draft ranks (Medusa's and EAGLE's sparse trees): which rank paths it holds
(``static_tree_choices``) and the proposer that drafts them over a row draft."""
from __future__ import annotations

import heapq

import torch

from .proposal import Proposal
from .row_draft import RowDraft


def static_tree_choices(rank_accuracy, size: int, max_depth: int) -> list[tuple[int, ...]]:
    """The ``size`` most likely paths of a static tree (Medusa's and EAGLE's sparse trees, chosen as
    Medusa's tree search chooses them): a path of draft ranks (0 = the draft's top token at that
    step) is worth the product of its ranks' measured acceptance rates, and the best ``size`` paths
    of at most ``max_depth`` steps are kept (prefix-closed: a path is never worth more than its
    parent). ``rank_accuracy``: one list of rates by rank for every depth, or one list per depth
    (Medusa's heads, each its own; the last list serves deeper steps). Returned parents first."""
    per_depth = [list(a) for a in rank_accuracy] if rank_accuracy and isinstance(rank_accuracy[0], (list, tuple)) \
        else [list(rank_accuracy or [])]
    if size < 1 or max_depth < 1 or not all(per_depth):
        raise ValueError(f"a static tree needs size >= 1, max_depth >= 1 and rank accuracies, got {size}, "
                         f"{max_depth}, {rank_accuracy}")
    if any(not 0 < a <= 1 for rates in per_depth for a in rates):
        raise ValueError(f"rank accuracies must lie in (0, 1], got {rank_accuracy}")

    def rates(depth: int) -> list[float]:  # the rates of the path's next step, at this depth (0-based)
        return per_depth[min(depth, len(per_depth) - 1)]

    frontier = [(-a, (i,)) for i, a in enumerate(rates(0))]
    heapq.heapify(frontier)
    chosen = []
    while frontier and len(chosen) < size:
        value, path = heapq.heappop(frontier)
        chosen.append(path)
        if len(path) < max_depth:
            for i, a in enumerate(rates(len(path))):
                heapq.heappush(frontier, (value * a, path + (i,)))
    return sorted(chosen, key=lambda p: (len(p), p))


class StaticTreeProposer:
    """A fixed tree of rank paths (``static_tree_choices``): each node is its parent's draft
    distribution's token of that rank; the tree's nodes at one depth run as one batch of rows."""

    def __init__(self, draft: RowDraft, choices: list[tuple[int, ...]]):
        choices = sorted({tuple(c) for c in choices}, key=lambda p: (len(p), p))
        if not choices or any(c[:-1] and c[:-1] not in choices for c in choices):
            raise ValueError("static tree choices must be non-empty rank paths whose prefixes are all choices")
        if max(max(c) for c in choices) >= draft.head_size:
            raise ValueError("a static tree rank exceeds the draft vocabulary")
        self.draft, self.choices = draft, choices
        self.depth = max(len(c) for c in choices)
        self.max_rows = len(choices)

    def reset(self) -> None:
        pass

    def skip_round(self) -> bool:
        return False

    def propose(self, context: torch.Tensor, max_depth: int, generator: torch.Generator | None = None) -> Proposal:
        draft = self.draft
        upto = draft.feed_context(context, self.max_rows)
        root_pos, device = context.numel() - 1, context.device
        logp, exit_ = draft.cascade(upto, 1)
        dist = {(): logp[0]}  # path -> the draft's log-probs for the token after it
        node_of: dict[tuple, int] = {(): -1}
        tokens, parents, rows, exits, score = [], [], [], [], []
        path_lp = {(): 0.0}
        parent_row = {(): -1}  # a path's draft row, relative to the context (-1: the root)
        for d in range(1, min(self.depth, max_depth) + 1):
            level = [c for c in self.choices if len(c) == d]
            ranks_needed: dict[tuple, int] = {}
            for c in level:
                ranks_needed[c[:-1]] = max(ranks_needed.get(c[:-1], 0), c[-1] + 1)
            top = {p: dist[p].topk(k) for p, k in ranks_needed.items()}
            for c in level:
                lp, idx = top[c[:-1]]
                node_of[c] = len(tokens)
                tokens.append(int(draft.to_vocab(idx[c[-1]].view(1))))
                parents.append(node_of[c[:-1]])
                exits.append(exit_)
                path_lp[c] = path_lp[c[:-1]] + float(lp[c[-1]])
                score.append(path_lp[c])
                rows.append(-1)
            expand = [c for c in level if any(len(x) == d + 1 and x[:-1] == c for x in self.choices)]
            if not expand or d == min(self.depth, max_depth):
                break
            first_row = draft.context_rows + draft.draft_rows
            upto = draft.append_rows(torch.tensor([tokens[node_of[c]] for c in expand], device=device),
                                     torch.full((len(expand),), root_pos + d, device=device),
                                     [parent_row[c[:-1]] for c in expand])
            logp, exit_ = draft.cascade(upto, len(expand))
            for j, c in enumerate(expand):
                dist[c] = logp[j]
                parent_row[c] = first_row - draft.context_rows + j
                rows[node_of[c]] = first_row + j
        return Proposal(tokens, parents, rows, exits, predicted=float(torch.tensor(score).exp().sum()))

    def round_done(self, proposal: Proposal, drafted: int, draft_seconds: float) -> None:
        pass
