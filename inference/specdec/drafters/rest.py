"""REST (retrieval-based speculative decoding, He et al., 2024): draft what followed the
context's longest suffix in a datastore, as a tree.

As in the original: try suffixes of ``max_token_span`` down to 2 tokens; take the continuations
(``draft_len`` = 10 tokens each) of up to ``max_matches`` occurrences of the longest one found;
count every continuation prefix (a trie node) and keep the ``num_draft`` most frequent. A node is
never more frequent than its parent, and ties go to the shallower node, so the kept set is a
subtree. The original reads the first ``max_matches`` occurrences in suffix-array order; we
spread them evenly over all occurrences so frequent continuations are not missed when there are
more.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from specdec.rest_datastore import SEPARATOR, Datastore
from specdec.types import DraftTree


def check_rest_settings(sort_depth: int, num_draft: int, max_token_span: int, min_token_span: int, draft_len: int,
                        max_matches: int) -> None:
    """REST's settings against a datastore's sort depth (``Datastore.read_meta``: before a target loads)."""
    if not 1 <= min_token_span <= max_token_span <= sort_depth:
        raise ValueError(f"REST token spans: need 1 <= min_token_span ({min_token_span}) <= max_token_span "
                         f"({max_token_span}) <= the datastore's sort depth ({sort_depth}) (--min-token-span, "
                         "--max-token-span)")
    for name, flag, value in (("num_draft", "--draft-tokens", num_draft), ("draft_len", "--draft-len", draft_len),
                              ("max_matches", "--max-matches", max_matches)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"REST {name} must be a positive integer ({flag}), got {value!r}")


class RestDrafter:
    def __init__(self, datastore: Datastore | str | Path, num_draft: int = 64, max_token_span: int = 16,
                 min_token_span: int = 2, draft_len: int = 10, max_matches: int = 5000,
                 tokenizer=None):
        self.datastore = datastore if isinstance(datastore, Datastore) else Datastore.load(datastore)
        check_rest_settings(self.datastore.sort_depth, num_draft, max_token_span, min_token_span, draft_len,
                            max_matches)
        if tokenizer is not None:
            self.datastore.check_tokenizer(tokenizer)
        self.num_draft, self.max_token_span, self.min_token_span = num_draft, max_token_span, min_token_span
        self.draft_len, self.max_matches = draft_len, max_matches
        self.last_match_len = 0

    def reset(self, prompt_ids: torch.Tensor) -> None:
        self.last_match_len = 0

    def propose(self, context: torch.Tensor, max_depth: int | None = None,
                generator: torch.Generator | None = None) -> DraftTree:
        tail = context[-self.max_token_span:].tolist()
        self.last_match_len, rows = self.datastore.continuations(
            tail, self.max_token_span, self.min_token_span, self.draft_len, self.max_matches)
        counts: Counter = Counter()
        for row in rows.tolist():
            if SEPARATOR in row:
                row = row[: row.index(SEPARATOR)]
            for depth in range(1, len(row) + 1):
                counts[tuple(row[:depth])] += 1
        if not counts:
            return DraftTree.empty(context.device)
        kept = sorted(counts, key=lambda prefix: (-counts[prefix], len(prefix)))[: self.num_draft]
        tree, _ = DraftTree.from_sequences(sorted(kept, key=len), context.device)
        return tree

    def accepted(self, context: torch.Tensor, num_new: int, num_drafted: int) -> None:
        pass
