"""SAM decoding (Hu et al., 2024): draft what followed the longest earlier match of the context's
suffix, found by a suffix automaton over the prompt and the generated text
(``suffix_automaton.SuffixAutomaton``, extended by each accepted token in O(1) amortised).

As in the original: the draft copies ``alpha`` (4) tokens per matched token, at most
``max_tokens`` - 1 (``--samd-n-predicts`` 40 counts the root too), from the match's earliest
occurrence. With an auxiliary drafter (SAM-D[EAGLE-2], SAM-D[Token Recycling], SAM-D[SD2]) the
automaton's chain is verified when the match is at least ``len_threshold`` tokens long, and
the auxiliary drafter drafts every other round. Its rounds are its own: it is not asked to
propose in an automaton round, nor told what that round kept (drafters whose state follows the
context catch up on the next round they draft, as SD2's does after a lookup round); hooks it reads
the target with (features, logits) are passed on every step.

Not built here: the original's static corpus automaton (REST's datastore would serve it).
"""
from __future__ import annotations

import torch

from ..types import DraftTree
from .suffix_automaton import SuffixAutomaton

HOOKS = ("target_hidden", "target_logits", "observe", "feature_layers", "capture_graphs")


class SamdDrafter:
    def __init__(self, max_tokens: int = 40, alpha: float = 4.0, aux=None, len_threshold: int = 5):
        if not isinstance(max_tokens, int) or max_tokens < 2:
            raise ValueError(f"SAM-D n_predicts counts the root: need an integer >= 2, got {max_tokens!r}")
        if not alpha > 0:
            raise ValueError(f"SAM-D alpha (draft tokens per matched token) must be > 0, got {alpha}")
        if not isinstance(len_threshold, int) or len_threshold < 1:
            raise ValueError(f"SAM-D len_threshold must be an integer >= 1, got {len_threshold!r}")
        self.max_tokens, self.alpha, self.aux, self.len_threshold = max_tokens, alpha, aux, len_threshold
        for hook in HOOKS:  # the engine looks for these on its drafter
            if hasattr(aux, hook):
                setattr(self, hook, getattr(aux, hook))
        self.sam = SuffixAutomaton()
        self.aux_round = False
        self.counts: dict = {}

    def reset(self, prompt_ids: torch.Tensor) -> None:
        self.sam = SuffixAutomaton()
        self.sam.extend_all(prompt_ids.tolist())
        self.aux_round = False
        self.counts = {"sam_rounds": 0, "sam_tokens": 0, "sam_accepted": 0, "aux_rounds": 0}
        if self.aux is not None:
            self.aux.reset(prompt_ids)

    def continuation(self, context: torch.Tensor, max_depth: int | None = None) -> tuple[list[int], int]:
        """(the automaton's draft, the match length), after taking in the context's new tokens."""
        self.sam.extend_all(context[len(self.sam):].tolist())
        length, _ = self.sam.longest_match()
        count = min(self.max_tokens - 1, int(length * self.alpha))
        if max_depth is not None:
            count = min(count, max_depth)
        return self.sam.continuation(count)

    def propose(self, context: torch.Tensor, max_depth: int | None = None,
                generator: torch.Generator | None = None) -> DraftTree:
        draft, length = self.continuation(context, max_depth)
        self.aux_round = self.aux is not None and length < self.len_threshold
        if self.aux_round:
            self.counts["aux_rounds"] += 1
            return self.aux.propose(context, max_depth, generator)
        if not draft:
            return DraftTree.empty(context.device)
        self.counts["sam_rounds"] += 1
        self.counts["sam_tokens"] += len(draft)
        return DraftTree.chain(torch.tensor(draft, dtype=torch.long, device=context.device))

    def accepted(self, context: torch.Tensor, num_new: int, num_drafted: int) -> None:
        if self.aux_round:
            self.aux.accepted(context, num_new, num_drafted)
        else:
            self.counts["sam_accepted"] += num_drafted

    def stats(self) -> dict:
        aux_stats = getattr(self.aux, "stats", None)
        return {**(aux_stats() if callable(aux_stats) else {}), **self.counts}
