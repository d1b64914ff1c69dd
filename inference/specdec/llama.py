"""A Llama-family forward over a Hugging Face checkpoint's own modules, with a preallocated cache.

The framework's generic forward builds masks, cache objects and output containers on every call;
for a small model on a CPU that overhead is a large share of a decoding step. This runner reuses
the checkpoint's modules (embedding, projections, MLP, RMSNorms, rotary embedding, head) and only
replaces the glue: explicit position ids, an explicit boolean mask (a tree mask for
verification), and :class:`KVCache`. It can run any *range* of layers on hidden states, which is
what SD2's early exits need (stop after layer 6, resume at layer 7 later).

Supported: Llama / Vicuna / Mistral / Qwen2 (bias on q/k/v comes with the modules), grouped-query
attention, tied heads, and every RoPE variant the model's own rotary module implements.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .kv_cache import KVCache

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


# Row counts that MKL multiplies slower than a larger one, and the count they are padded to (with
# copies of the rows; the extra outputs are dropped). Measured on 2 cores with the default target
# (whole float32 pass, 256 cached rows): 1 row takes the matrix-vector path; 3 rows 27.5 ms against
# 24.7 for 4; 10-15 rows 60-100 ms against 58 for 16. From 5 rows on the cost otherwise grows with
# every row (5: 33 ms, 8: 45 ms): on a CPU, verify at most 4 rows where the tree allows.
ODD_ROWS_PADDED = {1: 2, 3: 4, **{n: 16 for n in range(10, 16)}}


def linear_for(device: torch.device, dtype: torch.dtype, mode: str = "auto"):
    """``linear(x, weight, bias)`` = x @ weight.T + bias, computed the fastest known way here.

    On a CPU in float32, multiplying with the weight on the left (weight @ x.T, at least two
    columns) is much faster than torch's x @ weight.T for the few rows that decoding and
    verification have: the default target's pass on 2 cores, as scripts/benchmark_sd2.py times
    it, went from 39 to 24 ms for one token and from 61 to 31 ms for four. Elsewhere (bfloat16,
    CUDA) torch's own linear is the fast one.
    ``mode``: auto | torch | weight_left.
    """
    if mode == "auto":
        mode = "weight_left" if device.type == "cpu" and dtype == torch.float32 else "torch"
    if mode == "torch":
        return F.linear
    if mode != "weight_left":
        raise ValueError(f"linear mode must be auto, torch or weight_left, got {mode!r}")

    def weight_left(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        n = rows.shape[0]
        if n in ODD_ROWS_PADDED:
            rows = torch.cat((rows, rows[:ODD_ROWS_PADDED[n] - n]))
        # .contiguous(): the transposed product is column-major, and MKL multiplies a column-major
        # operand 5x slower (340 vs 66 us for 1536 -> 576 on 2 rows); the copy is n x out floats.
        y = torch.mm(weight, rows.T).T[:n].contiguous()
        if bias is not None:
            y = y + bias
        return y.reshape(*x.shape[:-1], weight.shape[0])

    return weight_left


class Int8Linear:
    """A weight-only int8 linear layer: per-output-channel scales, bfloat16 activations, computed by
    PyTorch's own kernel (``aten._weight_int8pack_mm``; used on the CPU, where it pays).

    For a draft only: on 2 CPU cores an exit-6 draft token of the default target's draft took 1.38 ms
    with int8 weights against 4.23 ms in float32 (``scripts/benchmark_sd2.py`` prints ms per draft
    token per exit and dtype). Rounding changes the draft's proposals, never the output: the target
    verifies in its own dtype and weights.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        w = weight.detach().float()
        scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127
        self.weight = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
        self.scales = scales.to(torch.bfloat16)
        self.bias = bias.detach().to(torch.bfloat16) if bias is not None else None

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def dequantized(self) -> torch.Tensor:
        return self.weight.float() * self.scales.float()[:, None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        y = torch.ops.aten._weight_int8pack_mm(rows, self.weight, self.scales)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def causal_mask(n: int, past: int, device: torch.device | str) -> torch.Tensor:
    """(1, 1, n, past + n) boolean mask: every new row sees the past and the new rows up to itself."""
    new = torch.ones(n, n, dtype=torch.bool, device=device).tril_()
    return torch.cat((torch.ones(n, past, dtype=torch.bool, device=device), new), dim=1)[None, None]


class LlamaRunner:
    """Runs a ``*ForCausalLM`` of a supported family with a :class:`KVCache`."""

    def __init__(self, model: torch.nn.Module, linear: str = "auto"):
        config = model.config
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unsupported model type {config.model_type!r}; supported: {SUPPORTED_MODEL_TYPES}")
        inner = model.model
        self.model = model
        self.config = config
        self.embed_tokens = inner.embed_tokens
        self.layers = list(inner.layers)
        self.depth = len(self.layers)  # the model's own layers; ``add_layers`` may put more after them
        self.norm = inner.norm
        self.lm_head = model.lm_head
        self.rotary = inner.rotary_emb
        attn = self.layers[0].self_attn
        if hasattr(attn, "q_norm"):
            raise ValueError(f"{config.model_type}: attention with q/k norms is not supported")
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = attn.head_dim
        self.scaling = attn.scaling
        self.dtype = self.embed_tokens.weight.dtype
        self.device = self.embed_tokens.weight.device
        self.max_position = config.max_position_embeddings
        self.vocab_size = config.vocab_size
        self.linear = linear_for(self.device, self.dtype, linear)
        window = getattr(config, "sliding_window", None)
        if config.model_type == "qwen2" and not getattr(config, "use_sliding_window", False):
            window = None
        # Sliding-window attention equals full attention while the context fits the window.
        self.sliding_window = window
        self.int8: dict[int, Int8Linear] = {}  # id(module) -> its int8 weights, after quantize_int8()

    def quantize_int8(self) -> None:
        """Weight-only int8 for every projection of every layer and for the head (a draft's speed)."""
        if self.dtype != torch.bfloat16:
            raise ValueError(f"int8 weights run with bfloat16 activations: load the model in bfloat16, not {self.dtype}")
        if self.device.type != "cpu":
            raise ValueError(f"int8 draft weights are for the CPU (here {self.device}): use bfloat16 draft weights")
        modules = [self.lm_head]
        for layer in self.layers:
            attn, mlp = layer.self_attn, layer.mlp
            modules += [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        self.int8 = {id(m): Int8Linear(m.weight, getattr(m, "bias", None)) for m in modules}

    def add_layers(self, modules) -> list[int]:
        """Decoder layers that run beside the model's own (a draft's exit adapters): appended after
        them, so every new cache has rows for their keys and values; returns their indices for
        ``run_layers``. Call before ``quantize_int8`` to quantise them too."""
        start = len(self.layers)
        self.layers += list(modules)
        return list(range(start, len(self.layers)))

    @property
    def num_layers(self) -> int:
        """Layers with KV in this runner's caches: the model's own and any added ones."""
        return len(self.layers)

    def new_cache(self, max_len: int) -> KVCache:
        if self.sliding_window is not None and max_len > self.sliding_window:
            raise ValueError(f"context of {max_len} tokens exceeds the sliding window ({self.sliding_window}), "
                             "which this runner does not implement")
        return KVCache(self.num_layers, self.num_kv_heads, self.head_dim, max_len, self.dtype, self.device)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(n,) token ids -> (1, n, hidden)."""
        return self.embed_tokens(ids[None])

    def rope(self, h: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for (n,) position ids, shaped (1, 1, n, head_dim) to broadcast over heads."""
        cos, sin = self.rotary(h, positions[None])
        return cos[:, None], sin[:, None]

    def run_layers(self, h: torch.Tensor, cache: KVCache, layers: range, positions: torch.Tensor,
                   mask: torch.Tensor | None, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Hidden states (1, n, hidden) through ``layers``, appending their KV to ``cache``.

        ``mask`` is (1, 1, n, past + n) boolean (True = attend) over the cache rows then the new
        rows, where ``past`` is the (common) cache length of these layers; ``None`` means every
        new row sees everything (only right for n == 1).
        """
        rope = rope if rope is not None else self.rope(h, positions)
        mask = self.grouped_mask(mask)
        for i in layers:
            layer = self.layers[i]
            h = h + self.attend(i, layer.self_attn, layer.input_layernorm(h), cache, rope, mask)
            h = h + self._mlp(layer.mlp, layer.post_attention_layernorm(h))
        return h

    def grouped_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Grouped-query attention folds each KV head's query heads into its rows (see ``attend``), so
        the mask repeats per group."""
        group = self.num_heads // self.num_kv_heads
        return mask.repeat(1, 1, group, 1) if mask is not None and group > 1 else mask

    def attend(self, i: int, attn: torch.nn.Module, x: torch.Tensor, cache: KVCache,
               rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
        """Layer ``i``'s self-attention over its normed input rows ``x`` (1, n, in), appending their
        KV to ``cache``; its output projection (1, n, hidden). ``mask`` comes from ``grouped_mask``."""
        n = x.shape[1]
        kv, group, dim = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim
        cos, sin = rope
        # Each KV head's query heads as its rows, (1, kv, group*n, dim): attention reads every key
        # once, with no repeated K/V.
        q = self._project(attn.q_proj, x).reshape(1, n, self.num_heads, dim).transpose(1, 2)
        k = self._project(attn.k_proj, x).reshape(1, n, kv, dim).transpose(1, 2)
        v = self._project(attn.v_proj, x).reshape(1, n, kv, dim).transpose(1, 2)
        q = (q * cos + _rotate_half(q) * sin).reshape(1, kv, group * n, dim)
        k = k * cos + _rotate_half(k) * sin
        keys, values = cache.append(i, k, v)
        o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scaling)
        o = o.reshape(1, kv * group, n, dim).transpose(1, 2).reshape(1, n, -1)
        return self._project(attn.o_proj, o)

    def _project(self, module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        quantized = self.int8.get(id(module))
        if quantized is not None:
            return quantized(x)
        return self.linear(x, module.weight, module.bias)

    def _mlp(self, mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The gated MLP of Llama/Mistral/Qwen2: down(act(gate(x)) * up(x))."""
        return self._project(mlp.down_proj, mlp.act_fn(self._project(mlp.gate_proj, x)) * self._project(mlp.up_proj, x))

    def head(self, h: torch.Tensor, weight: torch.Tensor | Int8Linear | None = None) -> torch.Tensor:
        """Final norm + LM head -> (n, vocab) logits; ``weight`` replaces the head (a sub-vocabulary)."""
        x = self.norm(h[0])
        if weight is None:
            return self._project(self.lm_head, x)
        if isinstance(weight, Int8Linear):
            return weight(x)
        return self.linear(x, weight)

    def forward(self, ids: torch.Tensor, cache: KVCache, positions: torch.Tensor,
                mask: torch.Tensor | None, logits: bool = True) -> torch.Tensor | None:
        """The model's layers over token ids (n,); (n, vocab) logits, or None when ``logits`` is False."""
        h = self.run_layers(self.embed(ids), cache, range(self.depth), positions, mask)
        return self.head(h) if logits else None
