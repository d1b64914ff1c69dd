"""Free branches: continuations a tree drafter adds to its own tree at no draft compute, looked up
in one of three tables the other drafters already keep (their code, shared, not copied):

- ``lookup``: the context itself, as prompt lookup (PLD) reads it (``pld.longest_match``): what
  followed the earliest earlier occurrence of the context's last 1-3 tokens;
- ``recycling``: Token Recycling's adjacency matrix (``recycling.AdjacencyMatrix``), fed by every
  verification pass (the engine's ``TargetLogitsReader`` hook): the chain of the target's top
  candidates after the root, then after each of them, as the target ranked them when that token
  was last an input row;
- ``samd``: SAM decoding's suffix automaton over the prompt and the answer
  (``samd.SamdDrafter.continuation``): what followed the earliest occurrence of the longest earlier
  match, 4 tokens per matched token.

Each continuation carries its *match*: how many of the context's last tokens it was found after,
the confidence a drafter may act on (a longer match is likelier to be copied on). The matrix is
keyed by the root alone, so a recycled chain's match is 1. Free tokens are proposals, not draws:
sampling verification treats them as one-hot, which keeps it lossless.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .pld import longest_match
from .recycling import AdjacencyMatrix, template_parents
from .samd import SamdDrafter

FREE_SOURCES = ("lookup", "recycling", "samd")


@dataclass(frozen=True)
class FreeContinuation:
    source: str  # one of FREE_SOURCES
    tokens: list[int]  # from the root on
    match: int  # context tokens it was found after


def check_free_branches(lookup_tokens: int, sources, lookup_first: bool = False, min_match: int = 1,
                        lookup_ngram: tuple[int, int] = (1, 3)) -> tuple[str, ...]:
    """A tree drafter's free-branch settings, checked (the SD2 drafter's and its flags'); the
    sources (None: prompt lookup's alone). ``lookup_tokens``: each branch's length, 0 for none;
    ``lookup_first`` / ``min_match``: free continuations after a match of ``min_match`` tokens or
    more are verified alone."""
    if not isinstance(lookup_tokens, int) or lookup_tokens < 0:
        raise ValueError(f"lookup_tokens must be >= 0, got {lookup_tokens!r}")
    if lookup_first and not lookup_tokens:
        raise ValueError("lookup_first needs lookup_tokens > 0")
    if min_match != 1 and not lookup_first:
        raise ValueError("lookup_first_min_ngram needs lookup_first")
    if sources is not None and not lookup_tokens:
        raise ValueError("free_branches needs lookup_tokens > 0 (each free branch's length)")
    sources = tuple(sources) if sources is not None else ("lookup",)
    unknown = [s for s in sources if s not in FREE_SOURCES]
    if not sources or unknown or len(set(sources)) != len(sources):
        raise ValueError(f"free_branches must be distinct names among {', '.join(FREE_SOURCES)}, got "
                         f"{','.join(sources) or 'none'}")
    if min_match < 1:
        raise ValueError(f"lookup_first_min_ngram must be >= 1, got {min_match}")
    if sources == ("lookup",) and not lookup_ngram[0] <= min_match <= lookup_ngram[1]:  # else it never fires
        raise ValueError(f"lookup_first_min_ngram must be within the lookup's n-gram sizes {lookup_ngram}, "
                         f"got {min_match}")
    return sources


class FreeBranches:
    """The free continuations of ``sources`` (a subset of ``FREE_SOURCES``, in order), each of at
    most ``max_len`` tokens. ``target_logits`` (the engine's ``TargetLogitsReader``) is set only
    with ``recycling``, so the engine reads the target's logits only when something uses them.
    Every table starts empty for each sequence (``reset``)."""

    def __init__(self, sources, vocab_size: int, max_len: int, lookup_ngram: tuple[int, int] = (1, 3)):
        sources = check_free_branches(max_len, sources)
        if max_len < 1:
            raise ValueError(f"a free branch needs at least 1 token, got {max_len}")
        self.sources, self.max_len, self.lookup_ngram = sources, max_len, lookup_ngram
        self.matrix = self.automaton = None
        if "recycling" in sources:
            self.matrix = AdjacencyMatrix(vocab_size, k=1)  # the chain reads rank 0 only
            self.chain = tuple((0,) * depth for depth in range(1, max_len + 1))
            self.chain_parents = template_parents(self.chain)
            self.target_logits = self.matrix.update_from_logits
        if "samd" in sources:
            self.automaton = SamdDrafter(max_tokens=max_len + 1)  # its draft counts the root

    def reset(self, prompt_ids: torch.Tensor) -> None:
        if self.matrix is not None:
            self.matrix.clear()
        if self.automaton is not None:
            self.automaton.reset(prompt_ids)

    def find(self, context: torch.Tensor, max_len: int | None = None) -> list[FreeContinuation]:
        """Every source's continuation after ``context`` (at most ``max_len`` tokens), longest match
        first (ties in source order); sources that find nothing are left out."""
        max_len = self.max_len if max_len is None else min(self.max_len, max_len)
        found = []
        for source in self.sources:
            tokens, match = getattr(self, "_" + source)(context, max_len)
            if len(tokens):
                found.append(FreeContinuation(source, [int(t) for t in tokens], match))
        return sorted(found, key=lambda c: -c.match)

    def _lookup(self, context: torch.Tensor, max_len: int):
        return longest_match(context.cpu().numpy(), *self.lookup_ngram, max_len) or ([], 0)

    def _recycling(self, context: torch.Tensor, max_len: int):
        tokens = self.matrix.expand(int(context[-1]), self.chain[:max_len], self.chain_parents[:max_len])
        known = tokens.index(-1) if -1 in tokens else len(tokens)  # after a token never verified: nothing
        return tokens[:known], 1

    def _samd(self, context: torch.Tensor, max_len: int):
        return self.automaton.continuation(context, max_len)
