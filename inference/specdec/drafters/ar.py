"""Plain autoregressive decoding as a drafter that proposes nothing: one target pass per token."""
from __future__ import annotations

import torch

from ..types import DraftTree


class ARDrafter:
    def reset(self, prompt_ids: torch.Tensor) -> None:
        pass

    def propose(self, context: torch.Tensor, max_depth: int | None = None,
                generator: torch.Generator | None = None) -> DraftTree:
        return DraftTree.empty(context.device)

    def accepted(self, context: torch.Tensor, num_new: int, num_drafted: int) -> None:
        pass
