"""Medusa and Hydra: draft heads on the target's last verified feature (``sd2.draft_heads``).

The engine hands the drafter the target's features of the tokens it caches (``target_hidden``);
the last one, f_{r-1}, is where the target's own head chose the root, so head k drafts the token
k positions after the root. The heads serve the same tree proposers as SD2 and EAGLE through
``HeadsDraft``'s rows (row 0 the root; a drafted token's row under its parent's): Medusa's static
sparse tree (``StaticTreeProposer``, its rank paths chosen from each head's measured top-k
accuracy by ``static_tree_choices``), or a dynamic one (``TreeProposer``). A Medusa head ignores
the tokens above it; a Hydra head reads them, so a tree queries it once per candidate prefix.
Verification is the engine's: greedy or rejection sampling, lossless (Medusa's typical acceptance
is not offered).
"""
from __future__ import annotations

from pathlib import Path

import torch

from sd2.draft_heads import QUALITY_REPORT_FILE, DraftHeads, load_draft_heads

from .feature_drafter import FeatureTreeDrafter, reported_rank_accuracy, tree_proposer

# Acceptance by rank per head, assumed for the static tree when the heads' held-out report does
# not give them (heads further out agree less).
FALLBACK_RANK_ACCURACY = ((0.45, 0.12, 0.06, 0.04), (0.25, 0.08, 0.05, 0.03), (0.15, 0.06, 0.04, 0.03),
                          (0.1, 0.05, 0.03, 0.02))


class HeadsDraft:
    """The tree proposers' view of the heads: rows of (token, parent row), the root's row first."""

    def __init__(self, heads: DraftHeads):
        self.heads = heads
        self.head_size = heads.out[0].out_features
        weight = heads.out[0].weight
        vocab = heads.draft_vocab
        self.vocab_ids = torch.tensor(vocab, device=weight.device) if vocab is not None else None
        self.feature: torch.Tensor | None = None  # f_{r-1}, the last cached token's
        self.x = None
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.context_rows = self.draft_rows = 0

    def feed_context(self, context: torch.Tensor, max_rows: int) -> int:
        self.x = self.heads.normed(self.feature[None])
        self.tokens, self.parents = [int(context[-1])], [-1]
        self.context_rows, self.draft_rows = 1, 0
        return 1

    def append_rows(self, tokens: torch.Tensor, positions: torch.Tensor, parent_rows: list[int]) -> int:
        self.tokens += tokens.tolist()
        self.parents += [1 + p if p >= 0 else 0 for p in parent_rows]
        self.draft_rows += tokens.numel()
        return len(self.tokens)

    def _prefix(self, row: int) -> list[int]:
        path = []
        while row >= 0:
            path.append(self.tokens[row])
            row = self.parents[row]
        return path[::-1]

    def cascade(self, upto: int, last: int) -> tuple[torch.Tensor, int]:
        """Log-probs of the next token under each of the ``last`` rows before ``upto`` (rows of one
        depth d: head d drafts their children), and the head's number (1-based)."""
        prefixes = [self._prefix(row) for row in range(upto - last, upto)]
        k = len(prefixes[0]) - 1
        if k >= self.heads.num_heads:
            raise ValueError(f"a tree {k + 1} deep needs {k + 1} heads, these are {self.heads.num_heads}")
        x = self.x.expand(last, -1)
        ids = torch.tensor(prefixes, device=x.device) if self.heads.kind == "hydra" else None
        logits = self.heads.head_logits(k, x, ids)
        return torch.log_softmax(logits.float(), dim=-1), k + 1

    def to_vocab(self, idx: torch.Tensor) -> torch.Tensor:
        return idx if self.vocab_ids is None else self.vocab_ids[idx]


class HeadsDrafter(FeatureTreeDrafter):
    """Medusa or Hydra heads drafting a static tree (default) or a dynamic one."""

    def __init__(self, heads: DraftHeads, tree: str = "static", total_token: int = 60, depth: int | None = None,
                 top_k: int = 10, rank_accuracy=None):
        depth = heads.num_heads if depth is None else depth
        if not 1 <= depth <= heads.num_heads:
            raise ValueError(f"depth {depth}: the {heads.kind} heads draft 1..{heads.num_heads} tokens deep")
        super().__init__()
        self.kind = heads.kind
        self.draft = HeadsDraft(heads)
        self.proposer = tree_proposer(self.draft, tree, total_token, depth, top_k,
                                      rank_accuracy or FALLBACK_RANK_ACCURACY)

    @torch.inference_mode()
    def reset(self, prompt_ids: torch.Tensor) -> None:
        self.draft.feature = None
        self.proposer.reset()
        self.start_counts()

    @torch.inference_mode()
    def target_hidden(self, hidden: torch.Tensor) -> None:
        self.draft.feature = hidden[-1].to(self.draft.heads.out[0].weight.dtype)

    def ready(self, context: torch.Tensor) -> bool:
        return self.draft.feature is not None


def load_heads_drafter(path: str | Path, target: torch.nn.Module, kind: str, dtype: torch.dtype | None = None,
                       rank_accuracy=None, **kwargs) -> HeadsDrafter:
    """Saved heads (refused unless trained for ``target`` and of this ``kind``) as a drafter. The
    static tree's rank accuracies default to the heads' held-out report (``heads_quality.json``
    beside them: ``rank_accuracy``, one list per head), else ``FALLBACK_RANK_ACCURACY``."""
    path = Path(path)
    heads = load_draft_heads(path, target, dtype)
    if heads.kind != kind:
        raise ValueError(f"{path} holds {heads.kind} heads, not {kind} heads")
    if rank_accuracy is None:
        rank_accuracy = reported_rank_accuracy(path / QUALITY_REPORT_FILE)
    return HeadsDrafter(heads, rank_accuracy=rank_accuracy, **kwargs)
