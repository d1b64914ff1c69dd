"""An EAGLE-2-style dynamic tree over a row draft (SD2's sorted draft, EAGLE's head, Hydra's
heads): top-k children of the best frontier nodes, level by level, each level at the shallowest
exit every one of its rows is sure at, then reranked to the budget's node count."""
from __future__ import annotations

import time

import torch

from .budget import AutoTreeBudget, FixedTreeBudget
from .proposal import Proposal
from .row_draft import RowDraft


class TreeProposer:
    """Levels of ``top_k`` children under the ``top_k`` best frontier nodes, ``depth`` levels
    after the root's, then the best nodes by path probability (as many as ``budget`` says)."""

    def __init__(self, draft: RowDraft, budget: FixedTreeBudget | AutoTreeBudget, depth: int = 4,
                 top_k: int = 10):
        if top_k < 1 or depth < 1:
            raise ValueError(f"tree needs top_k >= 1 and depth >= 1, got top_k={top_k}, depth={depth}")
        if top_k > draft.head_size:
            raise ValueError(f"top_k={top_k} exceeds the draft vocabulary")
        self.draft, self.budget, self.depth, self.top_k = draft, budget, depth, top_k
        self.max_rows = depth * top_k

    def reset(self) -> None:
        self.budget.reset()

    def skip_round(self) -> bool:
        return self.budget.skip_round()

    def propose(self, context: torch.Tensor, max_depth: int, generator: torch.Generator | None = None) -> Proposal:
        draft, k = self.draft, self.top_k
        upto = draft.feed_context(context, self.max_rows)
        root_pos = context.numel() - 1
        device = context.device
        logp, exit_ = draft.cascade(upto, 1)
        top_lp, top_idx = logp[0].topk(k)
        # Every generated node: token, parent node (-1 = root), cumulative log-prob; an exit per level.
        node_tokens, node_scores = [draft.to_vocab(top_idx)], [top_lp]
        node_parents = [torch.full((k,), -1, dtype=torch.long, device=device)]
        level_exits = [exit_]
        frontier = torch.arange(k, device=device)  # node ids of the current frontier
        frontier_scores, frontier_tokens = top_lp, node_tokens[0]
        row_of_node: dict[int, int] = {}
        frontier_rows = [-1] * k  # the frontier's parents as draft rows (-1: the root)
        count = k
        for d in range(1, min(self.depth + 1, max_depth)):  # level d adds nodes at depth d + 1
            if not self.budget.worth_a_level(frontier_scores):
                break
            level_start = time.perf_counter()
            first_row = draft.context_rows + draft.draft_rows
            upto = draft.append_rows(frontier_tokens, torch.full((k,), root_pos + d, device=device), frontier_rows)
            for j, node in enumerate(frontier.tolist()):
                row_of_node[node] = first_row + j
            logp, exit_ = draft.cascade(upto, k)
            child_lp, child_idx = logp.topk(k, dim=-1)  # (k parents, k children each)
            cum = (frontier_scores[:, None] + child_lp).flatten()
            node_tokens.append(draft.to_vocab(child_idx.flatten()))
            node_scores.append(cum)
            node_parents.append(frontier.repeat_interleave(k))
            level_exits.append(exit_)
            best = cum.topk(k).indices
            frontier_rows = [first_row - draft.context_rows + j for j in (best // k).tolist()]
            frontier = best + count
            frontier_scores, frontier_tokens = cum[best], node_tokens[-1][best]
            count += k * k
            self.budget.observe_level(time.perf_counter() - level_start)
        return self._rerank(torch.cat(node_tokens), torch.cat(node_scores), torch.cat(node_parents),
                            level_exits, row_of_node)

    def _rerank(self, tokens, scores, parents, level_exits, row_of_node) -> Proposal:
        """The best nodes by cumulative log-prob, parents first (a child never outscores its
        parent, and ties go to the earlier, i.e. ancestor, node), renumbered."""
        n = self.budget.tree_size(scores)
        score_list = scores.tolist()
        # Creation order is topological and Python's sort is stable, so ties keep ancestors first.
        chosen = sorted(sorted(range(len(score_list)), key=lambda i: -score_list[i])[:n])
        new_index = {old: new for new, old in enumerate(chosen)}
        parent_list = parents.tolist()
        k = self.top_k
        level_of = [0] * k + [1 + (i - k) // (k * k) for i in range(k, scores.numel())]
        token_list = tokens.tolist()
        return Proposal(tokens=[token_list[i] for i in chosen],
                        parents=[new_index[parent_list[i]] if parent_list[i] >= 0 else -1 for i in chosen],
                        rows=[row_of_node.get(i, -1) for i in chosen],
                        exits=[level_exits[level_of[i]] for i in chosen],
                        predicted=float(scores[chosen].exp().sum()))

    def round_done(self, proposal: Proposal, drafted: int, draft_seconds: float) -> None:
        self.budget.round_done(proposal.predicted, drafted, draft_seconds, proposal.drafted_nodes)
