"""EAGLE's draft head: one decoder layer over the target's own features. Training writes it,
inference reads it; both import this module (no training code is needed to load a head).

At row t the head reads the target's last-layer hidden state f_t (before the final norm) and the
embedding of the next token x_{t+1}, fused by a linear layer (2H -> H), runs one decoder layer of
the target's shape (causal attention over the earlier rows), and predicts the next feature
f_{t+1}. Scored through the target's own frozen final norm and LM head, that prediction gives the
distribution of x_{t+2}. Row t sits at position t (the position of f_t's token).

Saved as an HF-style folder: ``config.json`` (the decoder layer's Llama config, plus ``sd2_eagle``:
the target's path, its hidden size, vocabulary size, depth and a probe of its embedding weights,
by which a head for another target is refused) and ``model.safetensors`` (``fc.*`` and
``layer.*`` only: embedding, norm and head are the target's).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sd2.weight_files import head_entry, load_head_weights, write_head_folder

CONFIG_KEY = "sd2_eagle"
# The held-out report beside an EAGLE or EAGLE-3 head (sd2train.exit_quality --eagle), whose
# measured rank accuracies shape EAGLE's static tree.
QUALITY_REPORT_FILE = "eagle_quality.json"
PROBE_ROWS, PROBE_COLS = 8, 16  # the corner of the target's embedding a head records


def target_signature(target: nn.Module, path: str | None = None) -> dict:
    """What a head records about the target it was trained on."""
    config = target.config
    probe = target.get_input_embeddings().weight[:PROBE_ROWS, :PROBE_COLS].detach().float().cpu()
    return {"target": path, "hidden_size": config.hidden_size, "vocab_size": config.vocab_size,
            "num_hidden_layers": config.num_hidden_layers, "embed_probe": probe.flatten().tolist()}


def check_target(signature: dict, target: nn.Module, head_path: str | Path = "the head") -> None:
    """Raise ValueError unless ``target`` is the model the head was trained for (sizes, then the
    embedding probe, compared loosely so that float32, bfloat16 and float16 loads all pass)."""
    config = target.config
    for key in ("hidden_size", "vocab_size", "num_hidden_layers"):
        if signature.get(key) != getattr(config, key):
            raise ValueError(f"{head_path} was trained for a target with {key}={signature.get(key)}, this target "
                             f"has {getattr(config, key)} ({signature.get('target')})")
    probe = torch.tensor(signature["embed_probe"])
    mine = target.get_input_embeddings().weight[:PROBE_ROWS, :PROBE_COLS].detach().float().cpu().flatten()
    if not torch.allclose(mine, probe, rtol=1e-2, atol=1e-3):
        raise ValueError(f"{head_path} was trained for another target ({signature.get('target')}): its embedding "
                         "weights differ")


def saved_layer_config(path):
    """A saved head's decoder-layer config (its folder's config.json), with SDPA attention."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    config._attn_implementation = "sdpa"
    return config


def head_config(target_config):
    """The head's decoder-layer config: the target's, one layer deep."""
    config = type(target_config).from_dict(target_config.to_dict())
    config.num_hidden_layers = 1
    config._attn_implementation = "sdpa"
    return config


class EagleHead(nn.Module):
    """``fc`` and ``layer`` are the head's own weights; ``embed``, ``norm`` and ``lm_head`` are the
    target's (frozen, not saved)."""

    def __init__(self, config, embed: nn.Module, norm: nn.Module, lm_head: nn.Module, signature: dict | None = None):
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

        if config.model_type != "llama":
            raise ValueError(f"EAGLE heads are built for Llama-family targets, not {config.model_type!r}")
        self.config, self.signature = config, signature or {}
        hidden = config.hidden_size
        self.fc = nn.Linear(2 * hidden, hidden, bias=True)
        self.layer = LlamaDecoderLayer(config, layer_idx=0)
        self.rotary = LlamaRotaryEmbedding(config)
        self._target = (embed, norm, lm_head)  # a tuple: not registered, so neither trained nor saved

    @classmethod
    def for_target(cls, target: nn.Module, target_path: str | None = None) -> EagleHead:
        """A fresh head for ``target``: its layer starts as a copy of the target's last layer (the
        best start we have for predicting that layer's output), the fuse as [0 | I] (the feature
        passed through)."""
        inner = target.model
        head = cls(head_config(target.config), inner.embed_tokens, inner.norm, target.lm_head,
                   target_signature(target, target_path))
        head.layer.load_state_dict(inner.layers[-1].state_dict())
        with torch.no_grad():
            hidden = target.config.hidden_size
            head.fc.weight.zero_()
            head.fc.weight[:, hidden:] = torch.eye(hidden)
            head.fc.bias.zero_()
        return head.to(dtype=inner.embed_tokens.weight.dtype, device=inner.embed_tokens.weight.device)

    @property
    def embed(self) -> nn.Module:
        return self._target[0]

    def fuse(self, token_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """fc(cat(embed(x_{t+1}), f_t)): the layer's input rows."""
        return self.fc(torch.cat((self.embed(token_ids).to(features.dtype), features), dim=-1))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """The target's final norm and head over (predicted) features. The normed rows take the
        head's dtype: training predicts in float32 while the frozen target may be in bfloat16."""
        _, norm, lm_head = self._target
        return lm_head(norm(features).to(lm_head.weight.dtype))

    def forward(self, next_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Training: ``features`` (B, T, H) = f_0..f_{T-1}, ``next_ids`` (B, T) = x_1..x_T; the
        predicted f_1..f_T (B, T, H), causal over the rows."""
        h = self.fuse(next_ids, features)
        positions = torch.arange(h.shape[1], device=h.device)[None].expand(h.shape[0], -1)
        # No mask: SDPA attention is then causal; right padding only ever follows a row's real tokens.
        out = self.layer(h, attention_mask=None, position_ids=positions, position_embeddings=self.rotary(h, positions))
        return out[0] if isinstance(out, tuple) else out

    def save(self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write the head's folder. ``state_dict`` replaces the head's own weights: a training run
        sharded by FSDP or DeepSpeed gathers the full weights first and saves them from one process."""
        config = {**self.config.to_dict(), CONFIG_KEY: self.signature}
        return write_head_folder(path, config, state_dict or self.state_dict(), ("fc.", "layer."))


def load_eagle_head(path: str | Path, target: nn.Module, dtype: torch.dtype | None = None) -> EagleHead:
    """A saved head on ``target``'s device, checked against ``target`` before its weights load."""
    signature = head_entry(path, CONFIG_KEY, "an EAGLE head")
    config = saved_layer_config(path)
    check_target(signature, target, path)
    inner = target.model
    head = EagleHead(config, inner.embed_tokens, inner.norm, target.lm_head, signature)
    return load_head_weights(head, path, "an EAGLE head", inner.embed_tokens.weight, dtype)
