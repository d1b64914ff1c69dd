"""A preallocated key/value cache with one length per layer.

One buffer per kind holds every layer: ``(layers, kv_heads, max_len, head_dim)``. Appending
writes in place and returns views, so a decoding step allocates nothing for the cache. Each
layer keeps its own length because SD2's early exits leave deeper layers behind (deferred KV).
Row ``r`` is the same token in every layer; a shorter layer just has not computed it yet.
"""
from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype, device: torch.device | str):
        shape = (num_layers, num_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.lengths = [0] * num_layers

    @property
    def num_layers(self) -> int:
        return len(self.lengths)

    def reset(self) -> None:
        self.lengths = [0] * self.num_layers

    def grown(self, max_len: int) -> KVCache:
        """A cache of ``max_len`` rows holding this one's rows and lengths (a drafter outgrowing its
        first allocation)."""
        layers, kv_heads, rows, head_dim = self.k.shape
        cache = KVCache(layers, kv_heads, head_dim, max_len, self.k.dtype, self.k.device)
        cache.k[:, :, :rows], cache.v[:, :, :rows] = self.k, self.v
        cache.lengths = list(self.lengths)
        return cache

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v`` (1, kv_heads, n, head_dim) after the layer's rows; return all its rows."""
        start = self.lengths[layer]
        end = start + k.shape[2]
        if end > self.max_len:
            raise RuntimeError(f"KV cache full: layer {layer} needs {end} rows, capacity {self.max_len}")
        self.k[layer, :, start:end] = k[0]
        self.v[layer, :, start:end] = v[0]
        self.lengths[layer] = end
        return self.k[layer, :, :end].unsqueeze(0), self.v[layer, :, :end].unsqueeze(0)

    def crop(self, length: int, layers: range | None = None) -> None:
        """Drop rows at and after ``length`` (layers already shorter keep their length)."""
        for i in layers if layers is not None else range(self.num_layers):
            self.lengths[i] = min(self.lengths[i], length)

    def keep(self, rows: torch.Tensor, start: int) -> None:
        """Keep rows ``[0, start)`` and then ``rows`` (increasing indices >= start), moved to the
        contiguous slots ``start, start+1, ...``; everything else is dropped.

        Every layer is moved in one indexing op. A layer that had not computed some of ``rows``
        (deferred KV) keeps only the kept rows it has: those are a prefix of ``rows`` because rows
        are appended in order.
        """
        m = rows.numel()
        if m:
            self.k[:, :, start:start + m] = self.k[:, :, rows]
            self.v[:, :, start:start + m] = self.v[:, :, rows]
        rows_list = rows.tolist()
        for i, length in enumerate(self.lengths):
            if length > start:
                self.lengths[i] = start + sum(1 for r in rows_list if r < length)
