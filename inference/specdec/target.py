"""The target's passes for the engine: prefill, then one verification pass per step.

``EagerTarget`` runs each pass at its own shape, reading only the cache rows in use: the fast
choice on a CPU and the reference. ``StaticTarget`` runs every verification pass at a fixed shape
so that on CUDA each shape is captured once as a CUDA graph and replayed: a small target on a GPU
is bound by kernel launches (30 layers x ~15 kernels per pass), and a replay launches them all at
once. Fixed shapes mean: the tokens padded to a bucket (1, 2, 4, ... up to ``max_tokens``),
attention over a fixed number of cache rows (a power of two, masked beyond the rows in use), and
the new keys/values written at row indices held in a tensor (``static_passes.py``). Its output
equals the eager pass up to floating-point reduction order (``tests/unit/test_target.py`` checks
greedy equality on token ids); on a CPU the same fixed-shape code runs eagerly, which is how the
CPU tests check it.
"""
from __future__ import annotations

import torch

from .kv_cache import KVCache
from .llama import LlamaRunner, causal_mask
from .static_passes import StaticPasses


class EagerTarget:
    """Each pass at its own shape (the default)."""

    max_tokens = None  # no limit on a pass's size

    def __init__(self, runner: LlamaRunner):
        self.runner = runner
        self.cache: KVCache | None = None
        self.hidden: torch.Tensor | None = None  # the last verification's features (see ``feature_layers``)
        # The features a drafter reads: empty, the last layer's output (n, hidden); else the outputs
        # after each of these layer counts, side by side (n, len * hidden) (EAGLE-3's fusion).
        self.feature_layers: tuple[int, ...] = ()

    def start(self, capacity: int) -> None:
        """A new sequence of at most ``capacity`` cached tokens (the verified tree included)."""
        if self.cache is None or self.cache.max_len < capacity:
            self.cache = self.runner.new_cache(capacity)
        self.cache.reset()

    @property
    def length(self) -> int:
        return self.cache.lengths[0]

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Cache ``ids`` (n,), the first tokens of the sequence; their features (the last layer's
        hidden states before the final norm, or those of ``feature_layers``; no logits)."""
        n = ids.numel()
        h, features = self._run(ids, torch.arange(n, device=ids.device), causal_mask(n, 0, ids.device))
        return features

    def verify(self, ids: torch.Tensor, positions: torch.Tensor, tree_mask: torch.Tensor | None) -> torch.Tensor:
        """Logits (n, vocab) for ``ids`` (n,) after the cached rows; ``tree_mask`` (n, n) says which new
        rows each new row sees (None: n == 1). Appends their keys/values; their last-layer hidden
        states (or those of ``feature_layers``) stay in ``self.hidden`` until the next pass."""
        mask = None
        if tree_mask is not None:
            past = self.length
            mask = torch.cat((torch.ones(ids.numel(), past, dtype=torch.bool, device=ids.device), tree_mask),
                             dim=1)[None, None]
        h, self.hidden = self._run(ids, positions, mask)
        return self.runner.head(h)

    def _run(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None):
        """Every layer over ``ids``: the last layer's states (1, n, hidden) and the features."""
        runner = self.runner
        h = runner.embed(ids)
        if not self.feature_layers:
            h = runner.run_layers(h, self.cache, range(runner.num_layers), positions, mask)
            return h, h[0]
        rope, states, start = runner.rope(h, positions), [], 0
        for end in (*self.feature_layers, runner.num_layers):
            h = runner.run_layers(h, self.cache, range(start, end), positions, mask, rope)
            states.append(h[0])
            start = end
        return h, torch.cat(states[:len(self.feature_layers)], dim=-1)

    def keep(self, rows: torch.Tensor, start: int) -> None:
        """Keep the rows before ``start`` and then ``rows`` (see :meth:`KVCache.keep`)."""
        self.cache.keep(rows, start)

    def crop(self, length: int) -> None:
        self.cache.crop(length)


class StaticTarget(EagerTarget):
    """Verification passes at fixed shapes (:class:`StaticPasses`), replayed as CUDA graphs with
    ``cuda_graphs``. ``max_length``: the longest sequence (prompt + new tokens + tree) it will hold;
    ``max_tokens``: the largest pass (tree + root). Prefill runs eagerly at its own length (once a
    question)."""

    def __init__(self, runner: LlamaRunner, max_length: int, max_tokens: int = 128, cuda_graphs: bool = True):
        super().__init__(runner)
        self.passes = StaticPasses(runner, max_length, max_tokens, cuda_graphs)
        self.cache = self.passes.cache
        self.max_length, self.max_tokens = max_length, max_tokens
        self.layers = range(runner.num_layers)

    def start(self, capacity: int) -> None:
        if capacity > self.max_length:
            raise ValueError(f"a sequence of {capacity} rows does not fit the static cache ({self.max_length})")
        self.cache.reset()

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.numel()
        self.cache.write_rows[:n] = torch.arange(n, device=ids.device)
        self.cache.read_rows = n
        hidden = super().prefill(ids)
        self.cache.lengths = [n] * self.cache.num_layers
        return hidden

    def verify(self, ids: torch.Tensor, positions: torch.Tensor, tree_mask: torch.Tensor | None) -> torch.Tensor:
        past = self.length
        mask = None
        if tree_mask is not None:
            mask = torch.cat((torch.ones(ids.numel(), past, dtype=torch.bool, device=ids.device), tree_mask), dim=1)
        if not self.feature_layers:
            self.hidden, logits = self.passes.run(self.layers, ids, positions, past, mask, logits=True)
            return logits
        h, states = ids, []
        for layers in self._segments()[:-1]:
            h = self.passes.run(layers, h, positions, past, mask)
            states.append(h[0].clone())  # a later replay may reuse this output's memory
        _, logits = self.passes.run(self._segments()[-1], h, positions, past, mask, logits=True)
        self.hidden = torch.cat(states, dim=-1)
        return logits

    def _segments(self) -> list[range]:
        """The layers cut after each of ``feature_layers``; the last segment ends with the head."""
        ends = (*self.feature_layers, self.runner.num_layers)
        return [range(a, b) for a, b in zip((0, *ends[:-1]), ends)]

    def capture(self) -> float:
        """Record the CUDA graph of every verification shape; seconds taken."""
        segments = self._segments()
        return sum(self.passes.capture(layers, from_hidden=layers.start > 0, logits=layers is segments[-1])
                   for layers in segments)
