"""SD2's chain: one token per step, each at the shallowest confident exit, sampled with the
target's temperature and top-p when it samples, the length adapted per round. (Its tree is
``specdec.tree.dynamic.TreeProposer``, shared with EAGLE-2 and Hydra.)"""
from __future__ import annotations

import torch

from ...tree.proposal import Proposal
from ...verify import target_probs
from ..draft_length import AdaptiveDraftLength
from ..sorted_draft import SortedDraft


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
