"""EAGLE-3's draft head (Li et al. 2025): one decoder layer over a fusion of the target's low,
middle and high layers, trained with training-time test. Training writes it, inference reads it;
both import this module.

Row t at step 0 reads the fused feature g_t = fc(cat(h^a_t, h^b_t, h^c_t)), the target's states
after a, b and c layers at position t (the reference's choice: 2, L // 2 and L - 3 of L layers),
and the embedding of the next token x_{t+1}. Its layer takes cat(norm(embed(x_{t+1})), norm(g_t))
(2H wide) into attention and keeps g_t as the residual stream; its own final norm and LM head score
the draft vocabulary for x_{t+2}. The layer's output o_t is no target feature (nothing regresses it):
from step 2 of a draft on it replaces the fused feature, and row t at step j reads o_t of step j - 1
and the token x_{t+j+1}, at position t + j. Training unrolls those steps (``unroll``: row t at step
j attends to the step-0 rows up to t and to its own rows of steps 1..j, as a draft's tree row
attends to the context and its ancestors), so the head learns from its own outputs.

The LM head scores only the draft vocabulary (``draft_vocab.json``, token ids most frequent first:
this project's convention for EAGLE-3's d2t/t2d mapping); its rows start as the target's rows of
those tokens and train with the rest.

Saved as an HF-style folder: ``config.json`` (the layer's Llama config, plus ``sd2_eagle3``: the
target's signature as ``sd2.eagle_head`` records it, the fused layers and the draft-vocabulary
size), ``model.safetensors`` (``fc``, ``layer``, ``norm``, ``lm_head``) and ``draft_vocab.json``.
A head is refused for any other target.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sd2.draft_spec import stored_draft_vocab, write_draft_vocab_file
from sd2.eagle_head import CONFIG_KEY as EAGLE_CONFIG_KEY
from sd2.eagle_head import check_target, head_config, saved_layer_config, target_signature
from sd2.weight_files import head_entry, load_head_weights, write_head_folder

CONFIG_KEY = "sd2_eagle3"
SAVED_PREFIXES = ("fc.", "layer.", "norm.", "lm_head.")


def default_feature_layers(num_layers: int) -> tuple[int, int, int]:
    """EAGLE-3's fused layers for an L-layer target, as layer counts (the states after that many
    layers): 2, L // 2, L - 3 (2, 15 and 27 for the default 30-layer target)."""
    return 2, num_layers // 2, num_layers - 3


def check_feature_layers(layers, num_layers: int) -> tuple[int, ...]:
    layers = tuple(int(k) for k in layers)
    if len(layers) != 3 or any(b <= a for a, b in zip(layers, layers[1:])) or layers[0] < 1 or layers[-1] > num_layers:
        raise ValueError(f"EAGLE-3 fuses 3 increasing layer counts in [1, {num_layers}], got {list(layers)}"
                         + (f" (a {num_layers}-layer target is too shallow for the default: give them)"
                            if num_layers < 8 else ""))
    return layers


class Eagle3Head(nn.Module):
    """``fc``, ``layer``, ``norm`` and ``lm_head`` are the head's own weights; the embedding is the
    target's (frozen, not saved). ``vocab_ids`` maps the LM head's rows to token ids."""

    def __init__(self, config, embed: nn.Module, vocab_ids: list[int], feature_layers, signature: dict | None = None):
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

        if config.model_type != "llama":
            raise ValueError(f"EAGLE-3 heads are built for Llama-family targets, not {config.model_type!r}")
        self.config, self.signature = config, signature or {}
        self.feature_layers = tuple(feature_layers)
        hidden = config.hidden_size
        self.fc = nn.Linear(len(self.feature_layers) * hidden, hidden, bias=False)
        self.layer = LlamaDecoderLayer(config, layer_idx=0)
        attn = self.layer.self_attn
        for name in ("q_proj", "k_proj", "v_proj"):  # attention reads [normed embedding | normed feature]
            old = getattr(attn, name)
            setattr(attn, name, nn.Linear(2 * hidden, old.out_features, bias=old.bias is not None))
        self.layer.hidden_norm = LlamaRMSNorm(hidden, eps=config.rms_norm_eps)  # input_layernorm: the embedding's
        self.norm = LlamaRMSNorm(hidden, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(hidden, len(vocab_ids), bias=False)
        self.register_buffer("vocab_ids", torch.tensor(vocab_ids, dtype=torch.long), persistent=False)
        self.rotary = LlamaRotaryEmbedding(config)
        self._embed = (embed,)  # a tuple: not registered, so neither trained nor saved

    @classmethod
    def for_target(cls, target: nn.Module, vocab_ids: list[int] | None = None, feature_layers=None,
                   target_path: str | None = None) -> Eagle3Head:
        """A fresh head for ``target`` (``vocab_ids``: the draft vocabulary, default the whole one).
        It starts where the target is: ``fc`` passes the high feature through, the layer is a copy of
        the target's layer that follows it (its feature half; the embedding half starts at zero), and
        the norm and LM head are the target's final norm and its rows of the draft vocabulary."""
        inner, config = target.model, target.config
        layers = check_feature_layers(feature_layers or default_feature_layers(config.num_hidden_layers),
                                      config.num_hidden_layers)
        vocab = list(range(config.vocab_size)) if vocab_ids is None else [int(i) for i in vocab_ids]
        head = cls(head_config(config), inner.embed_tokens, vocab, layers, target_signature(target, target_path))
        hidden = config.hidden_size
        source = inner.layers[min(layers[-1], config.num_hidden_layers - 1)]
        with torch.no_grad():
            head.fc.weight.zero_()
            head.fc.weight[:, -hidden:] = torch.eye(hidden)
            state = source.state_dict()
            for name in ("q_proj", "k_proj", "v_proj"):
                proj = getattr(head.layer.self_attn, name)
                proj.weight.zero_()
                proj.weight[:, hidden:] = state.pop(f"self_attn.{name}.weight")
                if proj.bias is not None:
                    proj.bias.copy_(state.pop(f"self_attn.{name}.bias"))
            head.layer.hidden_norm.weight.copy_(state.pop("input_layernorm.weight"))
            head.layer.load_state_dict(state, strict=False)
            head.layer.input_layernorm.weight.fill_(1.0)
            head.norm.weight.copy_(inner.norm.weight)
            head.lm_head.weight.copy_(target.lm_head.weight[head.vocab_ids])
        weight = inner.embed_tokens.weight
        return head.to(dtype=weight.dtype, device=weight.device)

    @property
    def embed(self) -> nn.Module:
        return self._embed[0]

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary logits of the layer's outputs (its own norm and head)."""
        return self.lm_head(self.norm(out))

    def unroll(self, input_ids: torch.Tensor, features: torch.Tensor, steps: int) -> list[torch.Tensor]:
        """Training-time test over a batch: ``features`` (B, T, 3H) the target's states at each
        position, ``input_ids`` (B, T). Returns the layer's outputs (B, T, H) of each step: row t of
        step j reads x_{t+j+1} (0 past the end) and g_t (step 0) or its own step-(j-1) output, sits at
        position t + j and predicts x_{t+j+2}. Attention: the step-0 rows up to t, causal, and row
        t's own keys of steps 1..j. With right padding a real row never sees a padded one."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        layer, attn, config = self.layer, self.layer.self_attn, self.config
        batch, length = input_ids.shape
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        dim = attn.head_dim
        h = self.fc(features.to(self.fc.weight.dtype))
        positions = torch.arange(length, device=h.device)
        causal = torch.ones(length, length, dtype=torch.bool, device=h.device).tril_()
        eye = torch.eye(length, dtype=torch.bool, device=h.device)
        keys, values, outputs = [], [], []
        for j in range(steps):
            tokens = F.pad(input_ids[:, j + 1:], (0, j + 1))
            x = torch.cat((layer.input_layernorm(self.embed(tokens).to(h.dtype)), layer.hidden_norm(h)), dim=-1)
            q = attn.q_proj(x).view(batch, length, heads, dim).transpose(1, 2)
            k = attn.k_proj(x).view(batch, length, kv_heads, dim).transpose(1, 2)
            v = attn.v_proj(x).view(batch, length, kv_heads, dim).transpose(1, 2)
            cos, sin = self.rotary(x, (positions + j)[None].expand(batch, -1))
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            keys.append(k)
            values.append(v)
            mask = torch.cat([causal] + [eye] * j, dim=1)  # (T, T * (j + 1)): step 0 causal, then the diagonals
            o = F.scaled_dot_product_attention(q, torch.cat(keys, 2), torch.cat(values, 2), attn_mask=mask,
                                               scale=attn.scaling, enable_gqa=heads != kv_heads)
            h = h + attn.o_proj(o.transpose(1, 2).reshape(batch, length, heads * dim))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
            outputs.append(h)
        return outputs

    def forward(self, input_ids: torch.Tensor, features: torch.Tensor, steps: int = 1,
                logits: bool = True) -> list[torch.Tensor]:
        """Each unrolled step's draft-vocabulary logits (B, T, V_draft), or with ``logits=False``
        its layer outputs (see ``unroll``)."""
        outputs = self.unroll(input_ids, features, steps)
        return [self.logits(out) for out in outputs] if logits else outputs

    def save(self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write the head's folder. ``state_dict`` replaces the head's own weights (a sharded run
        gathers them first and saves from one process)."""
        config = {**self.config.to_dict(),
                  CONFIG_KEY: {**self.signature, "feature_layers": list(self.feature_layers),
                               "draft_vocab_size": len(self.vocab_ids),
                               "draft_vocab_file": write_draft_vocab_file(path, self.vocab_ids.tolist())}}
        return write_head_folder(path, config, state_dict or self.state_dict(), SAVED_PREFIXES)


def load_eagle3_head(path: str | Path, target: nn.Module, dtype: torch.dtype | None = None) -> Eagle3Head:
    """A saved head on ``target``'s device, checked against ``target`` before its weights load."""
    path = Path(path)
    signature = head_entry(path, CONFIG_KEY, "an EAGLE-3 head",
                           {EAGLE_CONFIG_KEY: "an EAGLE/EAGLE-2 head: use eagle or eagle2"})
    config = saved_layer_config(path)
    check_target(signature, target, path)
    vocab_ids = stored_draft_vocab(path, signature, target.config.vocab_size)  # the LM head's rows' token ids
    if vocab_ids is None:
        raise ValueError(f"{path / 'config.json'} names no draft vocabulary (draft_vocab_file): not an EAGLE-3 head")
    if len(vocab_ids) != signature.get("draft_vocab_size"):
        raise ValueError(f"{path / signature['draft_vocab_file']} holds {len(vocab_ids)} ids, the head scores "
                         f"{signature.get('draft_vocab_size')}")
    layers = check_feature_layers(signature["feature_layers"], target.config.num_hidden_layers)
    inner = target.model
    head = Eagle3Head(config, inner.embed_tokens, vocab_ids, layers, signature)
    return load_head_weights(head, path, "an EAGLE-3 head", inner.embed_tokens.weight, dtype)
