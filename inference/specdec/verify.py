"""Acceptance rules: which drafted nodes the target keeps, and the target's own next token.

``logits`` has one row per verified position: row 0 is the root (the last accepted token), row
``i + 1`` is tree node ``i``. Row r is the target's distribution for the token *after* that
position, so node i is judged by the row of its parent.

Greedy keeps the longest root-to-node path whose tokens equal the target's argmax at their
parent, then adds the argmax after the path's last node (the *bonus* token): the target's greedy
continuation, equal to one-token greedy decoding up to floating-point reduction order (a many-row
pass and a one-row pass may sum in different orders; near-ties can flip), which ``equal.py
--strict`` checks on token ids. Sampling uses recursive rejection sampling over siblings (SpecInfer / EAGLE):
at each accepted node, its children are tried in order; child x is accepted with probability
min(1, p(x) / q(x)); on rejection p becomes norm(max(0, p - q)) and the next child is tried; when
no child is accepted the next token is drawn from what is left of p. Each emitted token is then
distributed exactly as the target's p. Without draft probabilities q is one-hot at the proposed
token (deterministic proposals such as a top-k tree), so a rejection removes x from p. A node
with a q row must have been drawn from it (q(x) > 0; a node that was not, such as a lookup token
beside a sampled chain, carries a one-hot row): subtracting a q that never proposed x would bias p,
so a node with q(x) = 0 is refused as an internal error.

Every draw uses ``generator`` (the engine's, on its device), so a seeded run repeats exactly.
"""
from __future__ import annotations

import torch

from .tree import children_lists


def target_probs(logits: torch.Tensor, temperature: float, top_p: float = 1.0) -> torch.Tensor:
    """The target's sampling distribution per row: softmax(logits / T), restricted to the top-p nucleus."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the token crossing it included).
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def greedy_accept(logits: torch.Tensor, tokens: list[int], parents: list[int]) -> tuple[list[int], int]:
    """(accepted node indices root-first, bonus token) for greedy decoding."""
    best = logits.argmax(dim=-1).tolist()
    ok = [False] * len(tokens)
    deepest, deepest_depth = -1, 0
    depth = [0] * len(tokens)
    for i, (tok, p) in enumerate(zip(tokens, parents)):
        if (p < 0 or ok[p]) and tok == best[p + 1]:
            ok[i] = True
            depth[i] = depth[p] + 1 if p >= 0 else 1
            if depth[i] > deepest_depth:
                deepest, deepest_depth = i, depth[i]
    path = []
    node = deepest
    while node >= 0:
        path.append(node)
        node = parents[node]
    path.reverse()
    return path, best[deepest + 1]


def sample_accept(probs: torch.Tensor, tokens: list[int], parents: list[int],
                  draft_probs: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[list[int], int]:
    """(accepted node indices root-first, bonus token) by recursive rejection sampling.

    ``probs`` are the target's distributions per row (see :func:`target_probs`); ``draft_probs``
    (one row per node) the distributions the nodes were sampled from, or None for one-hot q.
    """
    kids = children_lists(parents)
    device = generator.device if generator is not None else probs.device  # draws where the generator lives
    path: list[int] = []
    node = -1
    while True:
        p = probs[node + 1]
        for child in kids[node]:
            x = tokens[child]
            if draft_probs is None:
                accept = p[x]
            else:
                q = draft_probs[child]
                if not q[x] > 0:
                    raise AssertionError(f"internal error: draft node {child} (token {x}) has q = 0 in its own "
                                         "draft_probs row, so it was not drawn from that row; a node proposed "
                                         "without sampling needs a one-hot row")
                accept = torch.clamp(p[x] / q[x], max=1.0)
            if torch.rand((), generator=generator, device=device) < accept:
                path.append(child)
                node = child
                break
            residual = p.clone()
            if draft_probs is None:
                residual[x] = 0.0
            else:
                residual = (residual - draft_probs[child]).clamp_(min=0.0)
            total = residual.sum()
            if total > 0:  # zero only when p == q, where x is always accepted anyway
                p = residual / total
        else:
            return path, int(torch.multinomial(p.to(device), 1, generator=generator))
