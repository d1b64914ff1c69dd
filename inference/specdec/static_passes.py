"""Passes at fixed shapes, replayed as CUDA graphs: the fast path for small models on a GPU.

A small model on a GPU is bound by kernel launches (the default target: 30 layers x ~15 kernels
per pass), and a CUDA graph launches a whole captured pass at once. A graph replays fixed shapes
at fixed addresses, so a pass here runs with:

- its rows padded to a bucket (1, 2, 4, ... up to ``max_tokens``); padding rows write their
  keys/values just past the real ones, attend only to themselves, and no real row sees them;
- attention over a fixed number of cache rows (a power of two from 256, or the whole cache),
  masked beyond the rows in use;
- its inputs (token ids or hidden states, positions, the rows to write, the mask) copied into
  buffers the graph reads.

Every (layers, tokens, context) shape is captured once by :meth:`StaticPasses.capture`, outside
any question's time. With ``cuda_graphs=False`` the same fixed-shape code runs eagerly, which is
how the CPU tests check that it computes what the eager passes compute.
"""
from __future__ import annotations

import time

import torch

from .kv_cache import KVCache
from .llama import LlamaRunner

STATIC_PASS_ROWS = 64  # the largest fixed-shape draft pass (SD2's, EAGLE's); a longer catch-up runs in chunks

MIN_CONTEXT_BUCKET = 256
# How a model's passes run: each at its own shape (eager), at fixed shapes run eagerly (static: the
# CPU check of the graphed path) or at fixed shapes captured as CUDA graphs.
PASSES = ("eager", "static", "cuda_graphs")


class StaticRowsCache(KVCache):
    """A KV cache for fixed-shape passes: ``append`` writes at the row indices in ``write_rows``
    (a tensor, so a replayed graph writes wherever it is told) and returns the first ``read_rows``
    rows, whatever their state: the pass's mask hides the rows not in use. Lengths are kept by the
    caller (:meth:`StaticPasses.run`), as a replay runs no Python."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.write_rows = torch.zeros(self.max_len, dtype=torch.long, device=self.k.device)
        self.read_rows = self.max_len

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.write_rows[:k.shape[2]]
        self.k[layer].index_copy_(1, rows, k[0])
        self.v[layer].index_copy_(1, rows, v[0])
        return self.k[layer, :, :self.read_rows].unsqueeze(0), self.v[layer, :, :self.read_rows].unsqueeze(0)


def buckets(limit: int, start: int = 1) -> list[int]:
    """start, 2 start, 4 start, ... below ``limit``, then ``limit`` itself."""
    sizes = []
    while start < limit:
        sizes.append(start)
        start *= 2
    return sizes + [limit]


class StaticPasses:
    """Fixed-shape passes of a runner's layers over one :class:`StaticRowsCache` of ``max_rows``
    rows (allocated once: a graph holds its addresses), at most ``max_tokens`` rows per pass."""

    def __init__(self, runner: LlamaRunner, max_rows: int, max_tokens: int, cuda_graphs: bool = True):
        if cuda_graphs and runner.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, the model is on {runner.device}")
        self.runner, self.cuda_graphs, self.max_tokens = runner, cuda_graphs, max_tokens
        self.token_buckets = buckets(max_tokens)
        rows = max_rows + max_tokens  # the padding rows of a last pass land past the sequence
        self.context_buckets = buckets(rows, MIN_CONTEXT_BUCKET)
        device = runner.device
        self.cache = StaticRowsCache(runner.num_layers, runner.num_kv_heads, runner.head_dim, rows, runner.dtype,
                                     device)
        self.ids = torch.zeros(max_tokens, dtype=torch.long, device=device)
        self.hidden = torch.zeros(1, max_tokens, runner.config.hidden_size, dtype=runner.dtype, device=device)
        self.positions = torch.zeros(max_tokens, dtype=torch.long, device=device)
        self.mask = torch.zeros(1, 1, max_tokens, rows, dtype=torch.bool, device=device)
        self.offsets = torch.arange(max_tokens, device=device)
        # (first layer, end layer, from hidden states, with logits, tokens, context) -> (graph, output)
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, object]] = {}
        # One memory pool for all of them: one runs at a time, and each output stays referenced here,
        # so a later capture never takes an earlier graph's output memory.
        self.pool = torch.cuda.graph_pool_handle() if cuda_graphs else None

    def run(self, layers: range, inputs: torch.Tensor, positions: torch.Tensor, start: int,
            mask: torch.Tensor | None, logits: bool = False) -> torch.Tensor:
        """``layers`` over n new rows written at cache rows ``start..start+n-1``; ``inputs`` are token
        ids (n,) or hidden states (1, n, hidden); ``mask`` (n, start + n) says which rows each new row
        sees (None: n == 1, it sees every row up to itself). Returns the hidden states (1, n, hidden),
        or with ``logits`` the last layer's hidden states (n, hidden) and the head's logits (n, vocab),
        both valid until the next pass. Sets the lengths of ``layers`` to start + n."""
        n = positions.numel()
        tokens = next((b for b in self.token_buckets if b >= n), None)
        if tokens is None:
            raise ValueError(f"a pass of {n} rows exceeds the largest fixed shape ({self.max_tokens})")
        context = next((c for c in self.context_buckets if c >= start + tokens), None)
        if context is None:
            raise ValueError(f"rows up to {start + n} do not fit the static cache ({self.cache.max_len - tokens})")
        from_hidden = inputs.dim() == 3
        self._fill(inputs, positions, start, mask, tokens)
        key = (layers.start, layers.stop, from_hidden, logits, tokens, context)
        graph = self.graphs.get(key)
        if graph is not None:
            graph[0].replay()
            out = graph[1]
        else:
            out = self._pass(*key)
        for i in layers:
            self.cache.lengths[i] = start + n
        return (out[0][0, :n], out[1][:n]) if logits else out[:, :n]

    def _pass(self, first: int, end: int, from_hidden: bool, logits: bool, tokens: int, context: int) -> torch.Tensor:
        """The pass itself, over the buffers."""
        runner = self.runner
        self.cache.read_rows = context
        h = self.hidden[:, :tokens] if from_hidden else runner.embed(self.ids[:tokens])
        h = runner.run_layers(h, self.cache, range(first, end), self.positions[:tokens],
                              self.mask[:, :, :tokens, :context])
        return (h, runner.head(h)) if logits else h

    def _fill(self, inputs, positions, start: int, mask, tokens: int) -> None:
        n = positions.numel()
        if inputs.dim() == 3:
            self.hidden[:, :n] = inputs
        else:
            self.ids[:n] = inputs
            self.ids[n:tokens] = 0
        self.positions[:n] = positions
        self.positions[n:tokens] = positions[-1]
        torch.add(self.offsets[:tokens], start, out=self.cache.write_rows[:tokens])
        rows = self.mask[0, 0]
        rows[:tokens].zero_()
        if mask is None:
            rows[0, :start + 1] = True
        else:
            rows[:n, :start + n] = mask
        pad = self.offsets[n:tokens]
        rows[pad, start + pad] = True

    @torch.inference_mode()
    def capture(self, layers: range, from_hidden: bool, logits: bool) -> float:
        """Capture every (tokens, context) shape of these passes (CUDA graphs only); seconds taken.
        The warm-up runs write only the cache's last rows, which no sequence uses, so capturing
        never disturbs a cached sequence."""
        if not self.cuda_graphs:
            return 0.0
        started = time.perf_counter()
        device = self.runner.device
        for context in self.context_buckets:
            for tokens in self.token_buckets:
                key = (layers.start, layers.stop, from_hidden, logits, tokens, context)
                if tokens > context or key in self.graphs:
                    continue
                self._fill_scratch(tokens)
                stream = torch.cuda.Stream(device)
                stream.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(stream):  # warm-up (kernel choice, workspaces) off the capture
                    self._pass(*key)
                torch.cuda.current_stream(device).wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self.pool):
                    out = self._pass(*key)
                self.graphs[key] = (graph, out)
        torch.cuda.synchronize(device)
        return time.perf_counter() - started

    def _fill_scratch(self, tokens: int) -> None:
        self.ids.zero_()
        self.hidden.zero_()
        self.positions.zero_()
        self.cache.write_rows[:tokens] = self.cache.max_len - tokens + self.offsets[:tokens]
        self.mask.zero_()
        self.mask[0, 0, :tokens, 0] = True
