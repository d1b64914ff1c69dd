"""SD2's two ways to draft a round from a sorted draft: a chain (one token per step, each at the
shallowest confident exit, sampled with the target's temperature and top-p when it samples) and
an EAGLE-2-style dynamic tree (top-k children of the best frontier nodes, level by level, each
level at the shallowest exit every one of its rows is sure at, then reranked to the budget)."""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

import torch

from ...types import DraftTree
from ...verify import target_probs
from ..draft_length import AdaptiveDraftLength
from .budget import AutoTreeBudget, FixedTreeBudget
from .sorted_draft import SortedDraft


@dataclass
class Proposal:
    """One round's drafted nodes, parents first. ``rows``: each node's draft row (-1: none, e.g. a
    chain's last token or a free branch's token); ``exits``: the exit that drafted it, or for a free
    branch's node the branch's source (a name such as 'lookup', or None)."""
    tokens: list[int]
    parents: list[int]
    rows: list[int]
    exits: list[int | str | None]
    draft_probs: torch.Tensor | None = None  # (nodes, vocab): what a sampled chain drew from
    predicted: float = 0.0  # expected accepted nodes (the tree's summed path probabilities)
    drafted_nodes: int | None = None  # nodes from the draft (default: all); any after them are free branches'

    @classmethod
    def empty(cls) -> Proposal:
        return cls([], [], [], [])

    def __post_init__(self):
        if self.drafted_nodes is None:
            self.drafted_nodes = len(self.tokens)

    def as_tree(self, device) -> DraftTree:
        tokens = torch.tensor(self.tokens, dtype=torch.long, device=device)
        parents = torch.tensor(self.parents, dtype=torch.long, device=device)
        return DraftTree(tokens, parents, self.draft_probs)

    def with_branch(self, branch: list[int], source: str | None = None) -> tuple[Proposal, int]:
        """This proposal plus ``branch`` (tokens from the root): follow the existing nodes while
        they agree, then new nodes (no draft row; ``source`` in place of an exit) for the rest.
        Returns it and the count of nodes added."""
        child = {(p, t): i for i, (p, t) in enumerate(zip(self.parents, self.tokens))}
        tokens, parents, rows, exits = list(self.tokens), list(self.parents), list(self.rows), list(self.exits)
        parent = -1
        for token in branch:
            node = child.get((parent, token))
            if node is None:
                node = len(tokens)
                tokens.append(token)
                parents.append(parent)
                rows.append(-1)
                exits.append(source)
            parent = node
        added = len(tokens) - len(self.tokens)
        probs = self.draft_probs
        if probs is not None and added:  # a sampled chain: the branch's tokens were not drawn from q (one-hot)
            new = torch.tensor(tokens[-added:], device=probs.device)
            probs = torch.cat((probs, torch.nn.functional.one_hot(new, probs.shape[1]).to(probs.dtype)))
        return Proposal(tokens, parents, rows, exits, probs, self.predicted, self.drafted_nodes), added

    def accepted_path(self, tokens: list[int]) -> list[int]:
        """The nodes that spell ``tokens`` from the root."""
        child = {(p, t): i for i, (p, t) in enumerate(zip(self.parents, self.tokens))}
        path, node = [], -1
        for token in tokens:
            node = child[(node, token)]
            path.append(node)
        return path


class ChainProposer:
    """Up to ``max_len`` tokens, the length adapted per round (``AdaptiveDraftLength``)."""

    def __init__(self, draft: SortedDraft, temperature: float = 0.0, top_p: float = 1.0, max_len: int = 16):
        self.draft = draft
        self.temperature, self.top_p = temperature, top_p  # the target's: a chain samples as it will
        self.max_rows = max_len
        self.length = AdaptiveDraftLength(min(5, max_len), max_len)

    def reset(self) -> None:
        self.length.reset()

    def skip_round(self) -> bool:
        return False

    def propose(self, context: torch.Tensor, max_depth: int, generator: torch.Generator | None = None) -> Proposal:
        draft = self.draft
        upto = draft.feed_context(context, self.max_rows)
        tokens, probs, exits, rows = [], [], [], []
        length = min(self.length.value, max_depth)
        for i in range(length):
            logp, exit_ = draft.cascade(upto, 1)
            if self.temperature > 0:
                q = target_probs(logp, self.temperature, self.top_p)[0]  # the nucleus the target keeps
                idx = torch.multinomial(q, 1, generator=generator)
                probs.append(q)
            else:
                idx = logp[0].argmax().view(1)
            token = draft.to_vocab(idx)
            tokens.append(token)
            exits.append(exit_)
            if i + 1 < length:  # the last token needs no row of its own this round
                rows.append(upto)
                position = context.numel() + i  # the token's own position
                upto = draft.append_rows(token, torch.tensor([position], device=token.device), [i - 1])
            else:
                rows.append(-1)
        draft_probs = draft.full_vocab(torch.stack(probs)) if probs else None
        return Proposal(torch.cat(tokens).tolist(), list(range(-1, length - 1)), rows, exits, draft_probs)

    def round_done(self, proposal: Proposal, drafted: int, draft_seconds: float) -> None:
        self.length.update(proposal.drafted_nodes, drafted)


class TreeProposer:
    """Levels of ``top_k`` children under the ``top_k`` best frontier nodes, ``depth`` levels
    after the root's, then the best nodes by path probability (as many as ``budget`` says)."""

    def __init__(self, draft: SortedDraft, budget: FixedTreeBudget | AutoTreeBudget, depth: int = 4,
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

    def __init__(self, draft: SortedDraft, choices: list[tuple[int, ...]]):
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
