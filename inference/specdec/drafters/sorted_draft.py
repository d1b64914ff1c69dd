"""The sorted draft (a small Llama with exits): its rows and their deferred-exit KV, what SD2's
proposers and EAGLE's head (one exit) draft with; a ``specdec.tree.row_draft.RowDraft``.

Exits and deferred KV. The draft's layers are split into groups ending at the exits (6, 9, 12:
layers [0,6), [6,9), [9,12)). A row (one token) that stopped at exit 6 has KV only in the first
group; its hidden state after layer 6 is kept, and the next time a deeper exit runs, every such
pending row is pushed through the deeper group first, in order. Each group therefore has its own
cache length, and the rows a group still owes are exactly ``[its length, the previous group's
length)``.

Rows. The draft cache's rows are the accepted context (causal) followed by this round's draft
rows, each of which sees the context and its own ancestors (a chain is a tree with one branch).
After verification the accepted path's rows are moved next to the context (like the target's
compaction), so accepted draft tokens are never recomputed.

Exit adapters. A draft with them (``sd2.exit_adapters``) runs exit k's own decoder layer on the
group's output before the norm and head; the adapter has KV of its own (a layer of the runner after
the draft's) for exactly the rows its group has, so it runs over the same rows right after its
group, and the deeper group still reads the group's output, not the adapter's.

Reduced head. With ``vocab_ids`` (token ids, most frequent first) the draft scores only those
tokens (FR-Spec). The target still verifies over its full vocabulary, so output is unchanged.
"""
from __future__ import annotations

import torch

from sd2.draft_spec import drafts_at

from ..llama import Int8Linear, LlamaRunner
from ..static_passes import StaticPasses


class SortedDraft:
    """``passes``: with :class:`StaticPasses` the groups run at fixed shapes over its cache (CUDA
    graphs on a GPU); without, each run at its own shape (eager)."""

    def __init__(self, runner: LlamaRunner, exits: list[int], thresholds: list[float],
                 vocab_ids: list[int] | None = None, branching: bool = False, passes: StaticPasses | None = None,
                 adapter_layers: list[int] | None = None):
        self.runner, self.exits, self.thresholds = runner, exits, thresholds
        self.passes = passes
        self.groups = [range(a, b) for a, b in zip([0] + exits[:-1], exits)]
        if adapter_layers is not None and len(adapter_layers) != len(exits):
            raise ValueError(f"{len(adapter_layers)} exit adapters for {len(exits)} exits")
        # the runner's layer that is each exit's adapter (``LlamaRunner.add_layers``), or none
        self.adapters = [range(i, i + 1) for i in adapter_layers] if adapter_layers is not None else None
        self.branching = branching  # draft rows form a tree (True) or a chain
        if vocab_ids is not None:
            ids = torch.tensor(vocab_ids, dtype=torch.long)
            if ids.numel() == 0 or ids.min() < 0 or ids.max() >= runner.vocab_size or ids.unique().numel() != ids.numel():
                raise ValueError(f"draft vocabulary must be distinct token ids in [0, {runner.vocab_size})")
            self.vocab_ids = ids.to(runner.device)
            self.head_weight = runner.lm_head.weight.detach()[self.vocab_ids].contiguous()
            if runner.int8:
                self.head_weight = Int8Linear(self.head_weight)
        else:
            self.vocab_ids, self.head_weight = None, None
        self.head_size = runner.vocab_size if vocab_ids is None else len(vocab_ids)
        self.capacity = 0
        self.cache = None
        self.context_rows = 0  # rows [0, context_rows) hold accepted tokens, causal
        self.draft_rows = 0  # rows after them this round: tree nodes with ancestry self.anc

    def reset(self, prompt_len: int) -> None:
        self._allocate(prompt_len + 512)
        self.cache.reset()
        self.context_rows = self.draft_rows = 0

    # --- rows ---------------------------------------------------------------------------------

    def feed_context(self, context: torch.Tensor, max_draft_rows: int) -> int:
        """Rows for accepted tokens not yet in the cache (at least the root), room for
        ``max_draft_rows`` draft rows after them; returns the row count."""
        length = context.numel()
        self._allocate(length + max_draft_rows + 1)
        c = self.context_rows
        self.tok[c:length] = context[c:]
        self.pos[c:length] = torch.arange(c, length, device=context.device)
        self.context_rows, self.draft_rows = length, 0
        self.anc = torch.zeros(max_draft_rows + 1, max_draft_rows + 1, dtype=torch.bool, device=context.device)
        return length

    def append_rows(self, tokens: torch.Tensor, positions: torch.Tensor, parent_rows: list[int]) -> int:
        """Add draft rows (one per token); ``parent_rows`` are draft-row indices or -1 (the root).
        Returns the row count."""
        start = self.context_rows + self.draft_rows
        n = tokens.numel()
        self._allocate(start + n + 1)
        self.tok[start:start + n] = tokens
        self.pos[start:start + n] = positions
        # A row sees its parent's ancestors and itself; parent -1 reads the never-written last row.
        rows = torch.arange(self.draft_rows, self.draft_rows + n, device=self.anc.device)
        self.anc[rows] = self.anc[torch.tensor(parent_rows, device=self.anc.device)]
        self.anc[rows, rows] = True
        self.draft_rows += n
        return start + n

    def keep_rows(self, rows: list[int], context_rows: int) -> None:
        """Move draft ``rows`` (absolute) to follow the ``context_rows`` context rows; drop the rest."""
        idx = torch.tensor(rows, dtype=torch.long, device=self.runner.device)
        self.cache.keep(idx, context_rows)
        m = len(rows)
        if m:
            for buf in (self.tok, self.pos, *self.exit_h):
                buf[context_rows:context_rows + m] = buf[idx]
        self.context_rows, self.draft_rows = context_rows + m, 0

    # --- running the draft --------------------------------------------------------------------

    def cascade(self, upto: int, last: int) -> tuple[torch.Tensor, int]:
        """Log-probs for the ``last`` rows before ``upto`` from the shallowest exit at which every
        one of those rows is confident (top-1 probability above the exit's threshold); and that exit.

        The rows of a tree level run as one batch, so the level goes as deep as its least confident
        row needs, and every row then takes that deeper, better exit."""
        for g, threshold in enumerate(self.thresholds):
            h = self.advance(g, upto)
            if self.adapters is not None:
                h = self.adapt(g, upto - h.shape[1], upto, h)
            logp = torch.log_softmax(self.logits(h[:, -last:]), dim=-1)
            # The rule on the level's least sure row; a threshold of 0 passes without reading it back.
            if threshold == 0 or drafts_at(float(logp.max(dim=-1).values.min().exp()), threshold):
                return logp, self.exits[g]
        raise AssertionError("unreachable: the last threshold is 0")

    def advance(self, g: int, upto: int) -> torch.Tensor:
        """Run group ``g`` over the rows it still owes below ``upto``; their hidden states (1, n, hidden)."""
        layers = self.groups[g]
        a = self.cache.lengths[layers.start]
        h = self._run(layers, lambda lo, hi: self._inputs(g, lo, hi), a, upto)
        self._keep_output(g, a, upto, h)
        return h

    def adapt(self, g: int, a: int, upto: int, h: torch.Tensor) -> torch.Tensor:
        """Exit ``g``'s adapter over rows [a, upto), the rows its group just ran (``h``, their states)."""
        adapter = self.adapters[g]
        if self.cache.lengths[adapter.start] != a:
            raise AssertionError(f"exit adapter {g} holds {self.cache.lengths[adapter.start]} rows, its group {a}")
        return self._run(adapter, lambda lo, hi: h[:, lo - a:hi - a], a, upto)

    def _run(self, layers: range, inputs, a: int, upto: int) -> torch.Tensor:
        """``layers`` over rows [a, upto); ``inputs(lo, hi)`` gives rows [lo, hi)'s token ids or hidden
        states."""
        if self.passes is not None:
            return self._run_static(layers, inputs, a, upto)
        x = inputs(a, upto)
        h = self.runner.embed(x) if x.dim() == 1 else x
        return self.runner.run_layers(h, self.cache, layers, self.pos[a:upto], self._mask(a, upto))

    def _inputs(self, g: int, lo: int, hi: int) -> torch.Tensor:
        """Group ``g``'s input for rows [lo, hi): token ids (n,) for the first group, else the
        previous group's hidden states (1, n, hidden)."""
        return self.tok[lo:hi] if g == 0 else self.exit_h[g - 1][lo:hi][None]

    def _reads_hidden(self, g: int) -> bool:
        """Whether ``_inputs`` gives group ``g`` hidden states (else token ids)."""
        return g > 0

    def _keep_output(self, g: int, a: int, upto: int, h: torch.Tensor) -> None:
        """Keep what a deeper group will start from."""
        if g < len(self.exit_h):
            self.exit_h[g][a:upto] = h[0]

    def _run_static(self, layers: range, inputs, a: int, upto: int) -> torch.Tensor:
        """``_run`` at fixed shapes, in chunks of the largest shape (a deep group catching up on a
        whole round's rows)."""
        chunks = []
        for lo in range(a, upto, self.passes.max_tokens):
            hi = min(lo + self.passes.max_tokens, upto)
            mask = self._mask(lo, hi)
            h = self.passes.run(layers, inputs(lo, hi), self.pos[lo:hi], lo, mask[0, 0] if mask is not None else None)
            chunks.append(h if hi == upto else h.clone())  # the next replay may reuse this output buffer
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)

    def capture(self) -> float:
        """Capture every group's fixed-shape passes as CUDA graphs (with ``passes``); seconds taken."""
        if self.passes is None:
            return 0.0
        return sum(self.passes.capture(layers, from_hidden=self._reads_hidden(g), logits=False)
                   for g, layers in enumerate(self.groups)) + sum(
            self.passes.capture(adapter, from_hidden=True, logits=False) for adapter in self.adapters or ())

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The (reduced) head's float32 logits for hidden states ``h``."""
        return self.runner.head(h, self.head_weight).float()

    def to_vocab(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids of head indices."""
        return idx if self.vocab_ids is None else self.vocab_ids[idx]

    def full_vocab(self, probs: torch.Tensor) -> torch.Tensor:
        """Head distributions (n, head_size) spread over the target's vocabulary."""
        if self.vocab_ids is None:
            return probs
        full = probs.new_zeros(probs.shape[0], self.runner.vocab_size)
        full[:, self.vocab_ids] = probs
        return full

    def _mask(self, a: int, b: int) -> torch.Tensor | None:
        """Mask for query rows [a, b) over key rows [0, b): context rows are causal, draft rows
        see the context and their ancestors."""
        if b - a == 1 and (not self.branching or b <= self.context_rows + 1):
            return None  # a chain's newest row sees everything before it
        device = self.runner.device
        q = torch.arange(a, b, device=device)[:, None]
        mask = torch.arange(b, device=device)[None] <= q
        c = self.context_rows
        if self.branching and b > c:
            first = max(a, c)
            mask[first - a:, c:] = self.anc[first - c:b - c, :b - c]
        return mask[None, None]

    def _allocate(self, rows: int) -> None:
        """Buffers for ``rows`` rows; on growth the old contents are kept."""
        if rows <= self.capacity:
            return
        limit = self.passes.cache.max_len - self.passes.max_tokens if self.passes is not None else None
        if limit is not None and rows > limit:
            raise ValueError(f"the draft needs {rows} rows; its static cache holds {limit}")
        rows = max(rows, 2 * self.capacity) if limit is None else min(max(rows, 2 * self.capacity), limit)
        device, hidden = self.runner.device, self.runner.config.hidden_size
        if self.passes is not None:
            cache = self.passes.cache  # one cache for good: captured graphs hold its addresses
        else:
            cache = self.cache.grown(rows) if self.cache is not None else self.runner.new_cache(rows)
        tok = torch.zeros(rows, dtype=torch.long, device=device)
        pos = torch.zeros(rows, dtype=torch.long, device=device)
        exit_h = [torch.zeros(rows, hidden, dtype=self.runner.dtype, device=device) for _ in self.groups[:-1]]
        if self.cache is not None:
            n = self.capacity
            tok[:n], pos[:n] = self.tok, self.pos
            for new, prev in zip(exit_h, self.exit_h):
                new[:n] = prev
        self.cache, self.tok, self.pos, self.exit_h = cache, tok, pos, exit_h
        self.capacity = rows


class SortedDraftDrafter:
    """What a drafter that drafts with a :class:`SortedDraft` (``self.draft``, SD2's and EAGLE's) and
    a proposer (``self.proposer``) does alike: capture the draft's passes, start both afresh."""

    draft: SortedDraft
    proposer: object

    def capture_graphs(self) -> float:
        """Capture the draft's fixed-shape passes as CUDA graphs (``passes='cuda_graphs'``); seconds."""
        return self.draft.capture()

    def reset_draft(self, prompt_ids: torch.Tensor) -> None:
        self.draft.reset(len(prompt_ids))
        self.proposer.reset()
