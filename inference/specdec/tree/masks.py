"""Tree bookkeeping: depths, children and ancestor masks."""
from __future__ import annotations

import torch


def ancestor_lists(parents: list[int]) -> list[list[int]]:
    """For each node, its ancestors and itself, root-most first (``parents[i] < i``, -1 = none)."""
    lists: list[list[int]] = []
    for i, p in enumerate(parents):
        if p >= i:
            raise ValueError(f"tree not in topological order: parent of node {i} is {p}")
        lists.append((lists[p] if p >= 0 else []) + [i])
    return lists


def ancestor_mask(parents: list[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, n) boolean: ``[i, j]`` is True when node j is node i or one of its ancestors."""
    n = len(parents)
    lists = ancestor_lists(parents)
    rows = [i for i, anc in enumerate(lists) for _ in anc]
    cols = [j for anc in lists for j in anc]
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[rows, cols] = True
    return mask.to(device)


def depths(parents: list[int]) -> list[int]:
    """Depth of each node; a child of the (implicit) root has depth 1."""
    out: list[int] = []
    for p in parents:
        out.append(out[p] + 1 if p >= 0 else 1)
    return out


def children_lists(parents: list[int]) -> list[list[int]]:
    """Children of each node, in index order; the last entry is the root's children."""
    kids: list[list[int]] = [[] for _ in range(len(parents) + 1)]
    for i, p in enumerate(parents):
        kids[p].append(i)  # p == -1 lands in the last slot: the root
    return kids
