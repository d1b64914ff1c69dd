"""The draft the tree proposers (``chain``, ``dynamic``, ``static``) drive: rows of (token, parent
row) over the round's context, each row's next-token distribution on demand.

Three drafts implement it: SD2's sorted draft and EAGLE's head (``drafters.sorted_draft``: rows are
KV-cache rows of a small Llama, a distribution at the shallowest confident exit), and the Medusa /
Hydra heads (``drafters.heads.HeadsDraft``: rows are prefixes, head d answers at depth d).
"""
from __future__ import annotations

from typing import Protocol

import torch


class RowDraft(Protocol):
    head_size: int  # the size of a distribution's support (the draft vocabulary's, if reduced)
    context_rows: int  # rows holding the round's context (the root's row last)
    draft_rows: int  # rows appended this round, after the context's

    def feed_context(self, context: torch.Tensor, max_draft_rows: int) -> int:
        """Start a round on ``context`` (its last token is the root), leaving room for
        ``max_draft_rows`` more rows; returns the row count so far (``upto``)."""

    def append_rows(self, tokens: torch.Tensor, positions: torch.Tensor, parent_rows: list[int]) -> int:
        """Rows for ``tokens`` at ``positions``, each under its parent's row (counted from the
        first row after the context; -1: the root's row); returns the new row count."""

    def cascade(self, upto: int, last: int) -> tuple[torch.Tensor, int]:
        """(log-probs (last, head_size) of the token after each of the ``last`` rows before
        ``upto``, the exit or head that gave them: 1-based)."""

    def to_vocab(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids of indices into a distribution's support."""
