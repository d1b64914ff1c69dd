"""What a tree proposer returns for one round: the drafted nodes, parents first, with each node's
draft row and where it came from (an exit, or a free branch's source)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..types import DraftTree


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
