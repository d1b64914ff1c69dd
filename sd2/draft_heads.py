"""Medusa's and Hydra's draft heads on the target's last hidden state. Training writes them,
inference reads them; both import this module (no training code is needed to load them).

Every head reads x = the target's final norm over f_t (its last decoder layer's output at position
t, the feature EAGLE reads too). Head k (1-based) predicts the token k + 1 positions after t: the
target's own head gives token t + 1, so with the last verified feature head 1 drafts the token
after the engine's root, head 2 the one after that, and so on.

- Medusa-1: head k = a residual SiLU block, then a vocabulary projection: W_k (x + SiLU(A_k x + b_k)).
- Hydra (the MLP variant): head k also reads the embeddings of the k tokens between t and its
  own (the root, then the k - 1 drafted before it), fused with x by a linear layer first:
  y = B_k cat(x, e_1, .., e_k); then W_k (y + SiLU(A_k y + b_k)). Heads are thus sequentially
  dependent: a tree queries head k with each candidate prefix.

The projections start as the target's LM head (its rows for the draft vocabulary, when the heads
score a reduced one: token ids most frequent first). Saved as an HF-style folder: ``config.json``
(``sd2_heads``: kind, number of heads, the draft vocabulary's file as ``draft_vocab_file``, as every
trained folder names it, and the target's signature, by which heads for another target are
refused), ``draft_vocab.json`` and ``model.safetensors``. Folders saved with the list inline
(``draft_vocab``) still load.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sd2.draft_spec import stored_draft_vocab, write_draft_vocab_file
from sd2.eagle_head import check_target, target_signature
from sd2.weight_files import head_entry, load_head_weights, write_head_folder

CONFIG_KEY = "sd2_heads"
KINDS = ("medusa", "hydra")
# The held-out report beside the heads (sd2train.heads_quality), whose measured rank accuracies
# shape Medusa's static tree.
QUALITY_REPORT_FILE = "heads_quality.json"


class ResBlock(nn.Module):
    """x + SiLU(A x + b), A starting at zero (the block starts as the identity, as Medusa's does)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + nn.functional.silu(self.linear(x))


class DraftHeads(nn.Module):
    """``kind`` heads over the target's normed features; ``norm`` and ``embed`` are the target's
    (frozen, not saved)."""

    def __init__(self, kind: str, num_heads: int, hidden: int, head_vocab: int, norm: nn.Module, embed: nn.Module,
                 signature: dict | None = None, draft_vocab: list[int] | None = None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"draft heads are one of {KINDS}, not {kind!r}")
        if num_heads < 1:
            raise ValueError(f"need at least one head, got {num_heads}")
        self.kind, self.num_heads, self.hidden = kind, num_heads, hidden
        self.signature, self.draft_vocab = signature or {}, draft_vocab
        self.blocks = nn.ModuleList(ResBlock(hidden) for _ in range(num_heads))
        self.out = nn.ModuleList(nn.Linear(hidden, head_vocab, bias=False) for _ in range(num_heads))
        # Hydra: head k fuses x with k token embeddings
        self.fuse = nn.ModuleList(nn.Linear((k + 2) * hidden, hidden, bias=False) for k in range(num_heads)) \
            if kind == "hydra" else None
        self._target = (norm, embed)  # a tuple: not registered, so neither trained nor saved

    @classmethod
    def for_target(cls, kind: str, target: nn.Module, num_heads: int = 4, target_path: str | None = None,
                   draft_vocab: list[int] | None = None) -> DraftHeads:
        """Fresh heads for ``target``: projections copied from its LM head (the draft vocabulary's
        rows), Hydra's fuses passing x through."""
        inner, weight = target.model, target.lm_head.weight
        rows = weight if draft_vocab is None else weight[torch.tensor(draft_vocab, device=weight.device)]
        heads = cls(kind, num_heads, target.config.hidden_size, rows.shape[0], inner.norm, inner.embed_tokens,
                    target_signature(target, target_path), draft_vocab)
        with torch.no_grad():
            for out in heads.out:
                out.weight.copy_(rows)
            for k, fuse in enumerate(heads.fuse or []):
                fuse.weight.zero_()
                fuse.weight[:, :heads.hidden] = torch.eye(heads.hidden)
        return heads.to(dtype=weight.dtype, device=weight.device)

    def normed(self, features: torch.Tensor) -> torch.Tensor:
        return self._target[0](features)

    def head_logits(self, k: int, x: torch.Tensor, prefix_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Head ``k`` (0-based: it predicts the token k + 2 positions after x's) over normed
        features x (..., H). Hydra needs ``prefix_ids`` (..., k + 1): the root and the k tokens
        drafted before this one."""
        if self.kind == "hydra":
            if prefix_ids is None or prefix_ids.shape[-1] != k + 1:
                raise ValueError(f"Hydra head {k} reads {k + 1} token embeddings")
            embeds = self._target[1](prefix_ids).to(x.dtype)
            x = self.fuse[k](torch.cat((x, embeds.flatten(-2)), dim=-1))
        return self.out[k](self.blocks[k](x))

    def save(self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        vocab = {"draft_vocab_file": write_draft_vocab_file(path, self.draft_vocab)} if self.draft_vocab else {}
        config = {"architecture": f"{self.kind}-heads", "hidden_size": self.hidden,
                  CONFIG_KEY: {"kind": self.kind, "num_heads": self.num_heads, **vocab,
                               "head_vocab": self.out[0].out_features, **self.signature}}
        return write_head_folder(path, config, state_dict or self.state_dict())


def load_draft_heads(path: str | Path, target: nn.Module, dtype: torch.dtype | None = None) -> DraftHeads:
    """Saved heads on ``target``'s device, checked against ``target`` before their weights load."""
    spec = head_entry(path, CONFIG_KEY, "a folder of Medusa or Hydra heads")
    check_target(spec, target, path)
    vocab = stored_draft_vocab(path, spec, target.config.vocab_size)
    inner = target.model
    heads = DraftHeads(spec["kind"], spec["num_heads"], spec["hidden_size"], spec["head_vocab"], inner.norm,
                       inner.embed_tokens, {k: spec[k] for k in ("target", "hidden_size", "vocab_size",
                                                                 "num_hidden_layers", "embed_probe")},
                       vocab)
    return load_head_weights(heads, path, f"{spec['kind']} heads", inner.embed_tokens.weight, dtype)
