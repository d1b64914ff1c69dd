"""EAGLE-3: the head of ``sd2.eagle3_head`` drafts EAGLE-2's dynamic tree from a fusion of the
target's low, middle and high layers.

The rows are EAGLE's (``EagleDraft``: context rows pair a position's feature with the next token,
a round's tree rows read their parent row's output), with three differences: the target hands over
the states after the head's three ``feature_layers`` (the engine asks its target for them), which
the head's ``fc`` fuses as they arrive; a row's input is its token's embedding beside its feature,
which the head's layer normalises separately (``Eagle3Runner``); and the head's own norm and LM
head score the draft vocabulary, whose rows map to token ids through ``vocab_ids``. A tree row at
depth k reads what training-time test trained it on: the output of its parent's row.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from sd2.eagle3_head import Eagle3Head, load_eagle3_head

from ..llama import LlamaRunner
from .eagle import EagleDraft, EagleDrafter


class Eagle3Runner(LlamaRunner):
    """The head's one layer: rows are (1, n, 2H), [token embedding | feature]; attention reads both,
    normed apart, and the feature is the residual stream (the layer returns (1, n, H))."""

    def run_layers(self, h, cache, layers, positions, mask, rope=None):
        layer = self.layers[0]
        embedded, feature = h.split(self.config.hidden_size, dim=-1)
        x = torch.cat((layer.input_layernorm(embedded), layer.hidden_norm(feature)), dim=-1)
        rope = rope if rope is not None else self.rope(h, positions)
        h = feature + self.attend(0, layer.self_attn, x, cache, rope, self.grouped_mask(mask))
        return h + self._mlp(layer.mlp, layer.post_attention_layernorm(h))


def eagle3_runner(head: Eagle3Head) -> Eagle3Runner:
    model = SimpleNamespace(config=head.config, lm_head=head.lm_head,
                            model=SimpleNamespace(embed_tokens=head.embed, layers=[head.layer], norm=head.norm,
                                                  rotary_emb=head.rotary))
    return Eagle3Runner(model)


class Eagle3Draft(EagleDraft):
    make_runner = staticmethod(eagle3_runner)

    def __init__(self, head: Eagle3Head, max_draft_rows: int = 256):
        super().__init__(head, None, branching=True, passes="eager", max_draft_rows=max_draft_rows)
        # The LM head has the draft vocabulary's rows already: only the ids they stand for.
        self.vocab_ids, self.head_size = head.vocab_ids.to(self.runner.device), len(head.vocab_ids)

    def add_features(self, hidden: torch.Tensor) -> None:
        """The three layers' states (n, 3H), fused as they arrive."""
        super().add_features(self.head.fc(hidden))

    def _inputs(self, g: int, lo: int, hi: int) -> torch.Tensor:
        return torch.cat((self.runner.embed_tokens(self.tok[lo:hi]), self.feat[lo:hi]), dim=-1)[None]


class Eagle3Drafter(EagleDrafter):
    """EAGLE-2's dynamic tree (top-k expansion by path probability, reranked to ``total_token``)
    over the EAGLE-3 head."""

    def __init__(self, head: Eagle3Head, total_token: int = 60, depth: int = 5, top_k: int = 10):
        super().__init__(head, "dynamic", total_token, depth, top_k)

    def _new_draft(self, head, draft_vocab, passes, max_draft_rows):
        return Eagle3Draft(head, max_draft_rows)

    @property
    def feature_layers(self) -> tuple[int, ...]:
        return self.draft.head.feature_layers


def load_eagle3_drafter(head_path: str | Path, target: torch.nn.Module, dtype: torch.dtype | None = None,
                        **kwargs) -> Eagle3Drafter:
    """A saved EAGLE-3 head (refused unless trained for ``target``) as a drafter."""
    return Eagle3Drafter(load_eagle3_head(head_path, target, dtype), **kwargs)
