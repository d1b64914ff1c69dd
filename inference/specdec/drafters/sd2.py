"""SD2: a sorted draft (the target's first N layers, SoFT-trained so that several exits work)
that drafts each token, or each tree level, with the shallowest confident exit.

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

Reduced head. With ``draft_vocab`` (token ids, most frequent first) the draft scores only those
tokens (FR-Spec). The target still verifies over its full vocabulary, so output is unchanged.

Lookup branch. With ``lookup_tokens`` > 0, prompt lookup's continuation (PLD: what followed the
last repeated n-gram of the context) joins the tree as one more branch, sharing the nodes where it
agrees with the draft. It costs no draft compute and wins where text is copied (translation,
summarisation, RAG), while the draft wins where it agrees. Rounds in which drafting does not pay
(auto mode) still verify the lookup branch. With ``lookup_first`` a round whose lookup finds a
continuation verifies that alone and the draft does not run (``stats["lookup_rounds"]``); the
draft drafts only where the context offers nothing to copy.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from sd2train.draft_spec import DraftSpec

from ..llama import Int8Linear, LlamaRunner
from ..types import DraftTree
from ..verify import target_probs
from ..vocab import load_draft
from .draft_length import AdaptiveDraftLength
from .pld import prompt_lookup

# Tree sizes (nodes + root) timed for ``total_token="auto"``.
# Up to 128: on a GPU a wide tree verifies nearly as fast as one token; on a CPU the timing rules it out.
AUTO_SIZES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)


class SD2Drafter:
    def __init__(self, draft: torch.nn.Module, exits=None, thresholds=None, tree: bool = False,
                 total_token: int | str = 60, depth: int = 4, top_k: int = 10,
                 draft_vocab: list[int] | None = None, temperature: float = 0.0, top_p: float = 1.0,
                 verify_costs: dict[int, float] | None = None, max_draft_len: int = 16,
                 int8_weights: bool = False, lookup_tokens: int = 0, lookup_ngram: tuple[int, int] = (1, 3),
                 lookup_first: bool = False):
        spec = DraftSpec.from_config(draft.config, exits, thresholds)  # the checkpoint's unless overridden
        self.runner = LlamaRunner(draft)
        if int8_weights:
            self.runner.quantize_int8()
        self.exits, self.thresholds = spec.exits, spec.thresholds
        if tree and (top_k < 1 or depth < 1):
            raise ValueError(f"tree needs top_k >= 1 and depth >= 1, got top_k={top_k}, depth={depth}")
        if total_token != "auto" and int(total_token) < 2:
            raise ValueError(f"total_token must be >= 2 or 'auto', got {total_token}")
        if total_token == "auto" and not verify_costs:
            raise ValueError("total_token='auto' needs the target's verification costs (engine.time_verification)")
        self.groups = [range(a, b) for a, b in zip([0] + self.exits[:-1], self.exits)]
        self.tree = tree
        self.total_token = total_token
        self.depth, self.top_k = depth, top_k
        self.temperature, self.top_p = temperature, top_p  # the target's: a chain samples as it will
        self.max_draft_len = max_draft_len
        self.draft_length = AdaptiveDraftLength(min(5, max_draft_len), max_draft_len)  # chain only
        self.verify_costs = sorted(verify_costs.items()) if verify_costs else None
        self.verify_timing_seconds = None  # start-up time spent measuring verify_costs (set by the caller)
        device = self.runner.device
        if draft_vocab is not None:
            ids = torch.tensor(draft_vocab, dtype=torch.long)
            if ids.numel() == 0 or ids.min() < 0 or ids.max() >= self.runner.vocab_size or ids.unique().numel() != ids.numel():
                raise ValueError(f"draft vocabulary must be distinct token ids in [0, {self.runner.vocab_size})")
            self.vocab_ids = ids.to(device)
            self.head_weight = self.runner.lm_head.weight.detach()[self.vocab_ids].contiguous()
            if int8_weights:
                self.head_weight = Int8Linear(self.head_weight)
        else:
            self.vocab_ids, self.head_weight = None, None
        if tree and top_k > (len(draft_vocab) if draft_vocab is not None else self.runner.vocab_size):
            raise ValueError(f"top_k={top_k} exceeds the draft vocabulary")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        if lookup_tokens < 0:
            raise ValueError(f"lookup_tokens must be >= 0, got {lookup_tokens}")
        if lookup_first and not lookup_tokens:
            raise ValueError("lookup_first needs lookup_tokens > 0")
        self.lookup_tokens, self.lookup_ngram, self.lookup_first = lookup_tokens, lookup_ngram, lookup_first
        self.capacity = 0
        self.stats_acc: dict = {}

    # --- per-sequence state -------------------------------------------------------------------

    @torch.inference_mode()
    def reset(self, prompt_ids: torch.Tensor) -> None:
        self._allocate(len(prompt_ids) + 512)
        self.cache.reset()
        self.context_rows = 0  # rows [0, context_rows) hold accepted tokens, causal
        self.draft_rows = 0  # rows after them this round: tree nodes with ancestry self.anc
        self.draft_length.reset()
        self.calibration = 1.0  # auto tree size: observed / predicted accepted tokens
        self.drafted_rate = None  # auto: EMA of tokens per second over drafted rounds
        self.skip_rounds, self.backoff, self.skipping = 0, 1, False
        self.draft_time = 0.0
        self.level_time = 0.0  # EMA of one tree level's drafting time (auto mode)
        self.stats_acc = {"exit_tokens": {e: 0 for e in self.exits},
                          "exit_accepted": {e: 0 for e in self.exits}, "draft_tree_sizes": [],
                          "skipped_rounds": 0, "lookup_tokens": 0, "lookup_accepted": 0, "lookup_rounds": 0}

    def stats(self) -> dict:
        sizes = self.stats_acc.get("draft_tree_sizes", [])
        out = {k: v for k, v in self.stats_acc.items() if k != "draft_tree_sizes"}
        out["mean_draft_size"] = sum(sizes) / len(sizes) if sizes else 0.0
        if self.verify_costs:  # what the auto tree size was chosen from, measured at start-up
            out["verify_costs_ms"] = {n: round(1000 * t, 2) for n, t in self.verify_costs}
            out["verify_timing_seconds"] = self.verify_timing_seconds
        return out

    def _allocate(self, rows: int) -> None:
        """Buffers for ``rows`` rows; on growth the old contents are kept."""
        if rows <= self.capacity:
            return
        rows = max(rows, 2 * self.capacity)
        hidden = self.runner.config.hidden_size
        old = getattr(self, "cache", None)
        cache = old.grown(rows) if old is not None else self.runner.new_cache(rows)
        tok = torch.zeros(rows, dtype=torch.long, device=self.runner.device)
        pos = torch.zeros(rows, dtype=torch.long, device=self.runner.device)
        exit_h = [torch.zeros(rows, hidden, dtype=self.runner.dtype, device=self.runner.device)
                  for _ in self.groups[:-1]]
        if old is not None:
            n = self.capacity
            tok[:n], pos[:n] = self.tok, self.pos
            for new, prev in zip(exit_h, self.exit_h):
                new[:n] = prev
        self.cache, self.tok, self.pos, self.exit_h = cache, tok, pos, exit_h
        self.capacity = rows

    # --- running the draft --------------------------------------------------------------------

    def _mask(self, a: int, b: int) -> torch.Tensor | None:
        """Mask for query rows [a, b) over key rows [0, b): context rows are causal, draft rows
        see the context and their ancestors."""
        if b - a == 1 and (not self.tree or b <= self.context_rows + 1):
            return None  # a chain's newest row sees everything before it
        device = self.runner.device
        q = torch.arange(a, b, device=device)[:, None]
        mask = torch.arange(b, device=device)[None] <= q
        c = self.context_rows
        if self.tree and b > c:
            first = max(a, c)
            mask[first - a:, c:] = self.anc[first - c:b - c, :b - c]
        return mask[None, None]

    def _advance(self, g: int, upto: int) -> torch.Tensor:
        """Run group ``g`` over the rows it still owes below ``upto``; their hidden states (1, n, hidden)."""
        layers = self.groups[g]
        a = self.cache.lengths[layers.start]
        h = self.runner.embed(self.tok[a:upto]) if g == 0 else self.exit_h[g - 1][a:upto][None]
        h = self.runner.run_layers(h, self.cache, layers, self.pos[a:upto], self._mask(a, upto))
        if g < len(self.exit_h):
            self.exit_h[g][a:upto] = h[0]
        return h

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.runner.head(h, self.head_weight).float()

    def _to_vocab(self, idx: torch.Tensor) -> torch.Tensor:
        return idx if self.vocab_ids is None else self.vocab_ids[idx]

    def _cascade(self, upto: int, last: int) -> tuple[torch.Tensor, int]:
        """Log-probs for the ``last`` rows before ``upto`` from the shallowest exit at which every
        one of those rows is confident (top-1 probability above the exit's threshold); and that exit.

        The rows of a tree level run as one batch, so the level goes as deep as its least confident
        row needs, and every row then takes that deeper, better exit."""
        for g, threshold in enumerate(self.thresholds):
            h = self._advance(g, upto)
            logp = torch.log_softmax(self._logits(h[:, -last:]), dim=-1)
            if threshold == 0 or float(logp.max(dim=-1).values.min()) > math.log(threshold):
                return logp, self.exits[g]
        raise AssertionError("unreachable: the last threshold is 0")

    def _append_rows(self, tokens: torch.Tensor, positions: torch.Tensor, parent_rows: list[int]) -> int:
        """Add draft rows (one per token); ``parent_rows`` are draft-row indices or -1 (the root)."""
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

    def _feed_context(self, context: torch.Tensor) -> int:
        """Rows for accepted tokens not yet in the cache (at least the root); returns the row count."""
        length = context.numel()
        self._allocate(length + self.max_rows() + 1)
        c = self.context_rows
        self.tok[c:length] = context[c:]
        self.pos[c:length] = torch.arange(c, length, device=context.device)
        self.context_rows, self.draft_rows = length, 0
        self.anc = torch.zeros(self.max_rows() + 1, self.max_rows() + 1, dtype=torch.bool, device=context.device)
        return length

    def max_rows(self) -> int:
        return self.depth * self.top_k if self.tree else self.max_draft_len

    # --- the Drafter interface ----------------------------------------------------------------

    @torch.inference_mode()
    def propose(self, context: torch.Tensor, max_depth: int | None = None) -> DraftTree:
        max_depth = max_depth or self.max_rows()
        found = None
        if self.lookup_tokens:
            found = prompt_lookup(context.cpu().numpy(), *self.lookup_ngram, min(self.lookup_tokens, max_depth))
        copying = self.lookup_first and found is not None
        self.skipping = self.skip_rounds > 0 or copying
        if self.skipping:  # nothing for the draft to do this round: lookup found text to copy, or auto
            if copying:    # mode found drafting slower than plain target steps lately
                self.stats_acc["lookup_rounds"] += 1
            else:
                self.skip_rounds -= 1
                self.stats_acc["skipped_rounds"] += 1
            self.proposed, self.node_parents, self.node_rows, self.node_exits = [], [], [], []
            return self._with_lookup_branch(DraftTree.empty(context.device), found)
        start = time.perf_counter()
        tree = self._propose_tree(context, max_depth) if self.tree else self._propose_chain(context, max_depth)
        self.draft_time = time.perf_counter() - start
        return self._with_lookup_branch(tree, found)

    def _with_lookup_branch(self, tree: DraftTree, found) -> DraftTree:
        """Add prompt lookup's continuation ``found`` (None: nothing found) as a branch: follow the
        draft's nodes while they agree, then new nodes (no draft row, no exit) for the rest."""
        self.model_nodes = len(self.proposed)
        if found is None:
            return tree
        child = {(p, t): i for i, (p, t) in enumerate(zip(self.node_parents, self.proposed))}
        parent, added = -1, 0
        for token in found.tolist():
            node = child.get((parent, token))
            if node is None:
                node = len(self.proposed)
                self.proposed.append(token)
                self.node_parents.append(parent)
                self.node_rows.append(-1)
                self.node_exits.append(None)
                added += 1
            parent = node
        if not added:
            return tree
        self.stats_acc["lookup_tokens"] += added
        device = tree.tokens.device
        new = torch.tensor(self.proposed[-added:], dtype=torch.long, device=device)
        parents = torch.tensor(self.node_parents[-added:], dtype=torch.long, device=device)
        probs = tree.draft_probs
        if probs is not None:  # a sampled chain: the lookup tokens were not drawn from q (one-hot)
            probs = torch.cat((probs, torch.nn.functional.one_hot(new, probs.shape[1]).to(probs.dtype)))
        return DraftTree(torch.cat((tree.tokens, new)), torch.cat((tree.parents, parents)), probs)

    def _propose_chain(self, context: torch.Tensor, max_depth: int) -> DraftTree:
        upto = self._feed_context(context)
        tokens, probs, self.node_exits, self.node_rows = [], [], [], []
        length = min(self.draft_length.value, max_depth)
        for i in range(length):
            logp, exit_ = self._cascade(upto, 1)
            if self.temperature > 0:
                q = target_probs(logp, self.temperature, self.top_p)[0]  # the nucleus the target keeps
                idx = torch.multinomial(q, 1)
                probs.append(q)
            else:
                idx = logp[0].argmax().view(1)
            token = self._to_vocab(idx)
            tokens.append(token)
            self.node_exits.append(exit_)
            self.stats_acc["exit_tokens"][exit_] += 1
            if i + 1 < length:  # the last token needs no row of its own this round
                self.node_rows.append(upto)
                upto = self._append_rows(token, torch.tensor([upto], device=token.device), [i - 1])
            else:
                self.node_rows.append(-1)
        self.node_parents = list(range(-1, len(tokens) - 1))
        tokens = torch.cat(tokens)
        self.proposed = tokens.tolist()
        self.stats_acc["draft_tree_sizes"].append(len(tokens))
        draft_probs = self._full_vocab(torch.stack(probs)) if probs else None
        return DraftTree.chain(tokens, draft_probs)

    def _full_vocab(self, probs: torch.Tensor) -> torch.Tensor:
        if self.vocab_ids is None:
            return probs
        full = probs.new_zeros(probs.shape[0], self.runner.vocab_size)
        full[:, self.vocab_ids] = probs
        return full

    def _propose_tree(self, context: torch.Tensor, max_depth: int) -> DraftTree:
        """EAGLE-2-style dynamic tree with a per-level adaptive exit, then rerank."""
        k = self.top_k
        upto = self._feed_context(context)
        root_pos = context.numel() - 1
        logp, exit_ = self._cascade(upto, 1)
        top_lp, top_idx = logp[0].topk(k)
        # Every generated node: token, parent node (-1 = root), cumulative log-prob, exit, draft row.
        node_tokens = [self._to_vocab(top_idx)]
        node_scores = [top_lp]
        device = context.device
        node_parents = [torch.full((k,), -1, dtype=torch.long, device=device)]
        level_exits = [exit_]
        frontier = torch.arange(k, device=device)  # node ids of the current frontier
        frontier_scores, frontier_tokens = top_lp, node_tokens[0]
        row_of_node: dict[int, int] = {}
        frontier_rows = [-1] * k  # the frontier's parents as draft rows (-1: the root)
        count = k
        for d in range(1, min(self.depth + 1, max_depth)):  # level d adds nodes at depth d + 1
            if self.total_token == "auto" and self._not_worth_a_level(frontier_scores):
                break
            level_start = time.perf_counter()
            first_row = self.context_rows + self.draft_rows
            upto = self._append_rows(frontier_tokens, torch.full((k,), root_pos + d, device=context.device),
                                     frontier_rows)
            for j, node in enumerate(frontier.tolist()):
                row_of_node[node] = first_row + j
            logp, exit_ = self._cascade(upto, k)
            child_lp, child_idx = logp.topk(k, dim=-1)  # (k parents, k children each)
            cum = (frontier_scores[:, None] + child_lp).flatten()
            node_tokens.append(self._to_vocab(child_idx.flatten()))
            node_scores.append(cum)
            node_parents.append(frontier.repeat_interleave(k))
            level_exits.append(exit_)
            best = cum.topk(k).indices
            frontier_rows = [first_row - self.context_rows + j for j in (best // k).tolist()]
            frontier = best + count
            frontier_scores, frontier_tokens = cum[best], node_tokens[-1][best]
            count += k * k
            self.level_time = 0.8 * self.level_time + 0.2 * (time.perf_counter() - level_start)
        return self._rerank(torch.cat(node_tokens), torch.cat(node_scores), torch.cat(node_parents),
                            level_exits, row_of_node)

    def _rerank(self, tokens, scores, parents, level_exits, row_of_node) -> DraftTree:
        """The best nodes by cumulative log-prob, parents first (a child never outscores its
        parent, and ties go to the earlier, i.e. ancestor, node), renumbered as a DraftTree."""
        n = self._tree_size(scores)
        score_list = scores.tolist()
        # Creation order is topological and Python's sort is stable, so ties keep ancestors first.
        chosen = sorted(sorted(range(len(score_list)), key=lambda i: -score_list[i])[:n])
        new_index = {old: new for new, old in enumerate(chosen)}
        parent_list = parents.tolist()
        new_parents = [new_index[parent_list[i]] if parent_list[i] >= 0 else -1 for i in chosen]
        k = self.top_k
        level_of = [0] * k + [1 + (i - k) // (k * k) for i in range(k, scores.numel())]
        self.node_exits = [level_exits[level_of[i]] for i in chosen]
        self.node_rows = [row_of_node.get(i, -1) for i in chosen]
        self.node_parents = new_parents
        for e in self.node_exits:
            self.stats_acc["exit_tokens"][e] += 1
        self.stats_acc["draft_tree_sizes"].append(len(chosen))
        self.predicted = float(scores[chosen].exp().sum())
        idx = torch.tensor(chosen, device=tokens.device)
        out = tokens[idx]
        self.proposed = out.tolist()
        return DraftTree(out, torch.tensor(new_parents, device=tokens.device))

    def _not_worth_a_level(self, frontier_scores: torch.Tensor) -> bool:
        """Auto mode: another level can add at most the frontier's total path probability in
        accepted tokens (calibrated); stop when that saves less target time than the level costs."""
        gain = self.calibration * float(frontier_scores.exp().sum())
        return gain * self.verify_costs[0][1] < self.level_time

    def _verify_cost(self, tokens: int) -> float:
        """Timed cost of verifying ``tokens`` tokens (the smallest timed size that holds them)."""
        return next((cost for size, cost in self.verify_costs if size >= tokens), self.verify_costs[-1][1])

    def _decide_skipping(self, accepted: int) -> None:
        """Auto mode's budget may be zero: while drafted rounds yield fewer tokens per second
        (EMA) than one-token target steps, skip drafting for 1, 2, 4, ... 16 rounds, then probe."""
        rate = (1 + accepted) / (self.draft_time + self._verify_cost(self.model_nodes + 1))
        self.drafted_rate = rate if self.drafted_rate is None else 0.7 * self.drafted_rate + 0.3 * rate
        if self.drafted_rate * self._verify_cost(1) < 1:
            self.skip_rounds, self.backoff = self.backoff, min(2 * self.backoff, 16)
        else:
            self.backoff = 1

    def _tree_size(self, scores: torch.Tensor) -> int:
        """Nodes to verify: total_token - 1, or (auto) the size that maximises expected tokens
        per second, from the draft's own path probabilities (calibrated online) and the timed
        cost of verifying each size on this hardware."""
        if self.total_token != "auto":
            return min(int(self.total_token) - 1, scores.numel())
        probs = scores.exp().sort(descending=True).values.cumsum(0).tolist()
        best_n, best_rate = 1, -1.0
        for size, cost in self.verify_costs:
            n = min(size - 1, len(probs))
            if n < 1:
                continue
            rate = (1 + self.calibration * probs[n - 1]) / (self.draft_time + cost)
            if rate > best_rate:
                best_n, best_rate = n, rate
        return best_n

    @torch.inference_mode()
    def accepted(self, context: torch.Tensor, num_new: int, num_drafted: int) -> None:
        """Keep the accepted path's draft rows next to the context; adapt length or calibration."""
        child = {(p, t): i for i, (p, t) in enumerate(zip(self.node_parents, self.proposed))}
        path, node = [], -1
        for tok in context[len(context) - num_new:][:num_drafted].tolist():
            node = child[(node, tok)]
            path.append(node)
        for i in path:
            if self.node_exits[i] is None:
                self.stats_acc["lookup_accepted"] += 1
            else:
                self.stats_acc["exit_accepted"][self.node_exits[i]] += 1
        if self.skipping:
            return  # the draft ran nothing: accepted tokens reach its cache next round
        rows = [self.node_rows[i] for i in path if self.node_rows[i] >= 0]
        self._keep_rows(rows, len(context) - num_new)
        drafted = sum(i < self.model_nodes for i in path)  # accepted tokens the draft proposed
        if self.tree:
            if self.total_token == "auto" and self.predicted > 0:
                self.calibration = 0.9 * self.calibration + 0.1 * (drafted / self.predicted)
                self._decide_skipping(drafted)
        else:
            self.draft_length.update(self.model_nodes, drafted)

    def _keep_rows(self, rows: list[int], context_rows: int) -> None:
        """Move draft ``rows`` (absolute) to follow the ``context_rows`` context rows; drop the rest."""
        idx = torch.tensor(rows, dtype=torch.long, device=self.runner.device)
        self.cache.keep(idx, context_rows)
        m = len(rows)
        if m:
            for buf in (self.tok, self.pos, *self.exit_h):
                buf[context_rows:context_rows + m] = buf[idx]
        self.context_rows, self.draft_rows = context_rows + m, 0


def load_sd2_drafter(drafter_path: str | Path, target: torch.nn.Module, target_tokenizer=None,
                     dtype: torch.dtype | None = None, draft_vocab_size: int | None = None, **kwargs) -> SD2Drafter:
    """Load a draft checkpoint (an HF folder), check it against the target, and build the drafter.

    ``kwargs`` go to :class:`SD2Drafter` (exits, thresholds, tree, int8_weights, ...); exits and
    thresholds default to the checkpoint's ``config.sd2``. ``int8_weights`` loads the draft in
    bfloat16 and quantises its layers and head to int8 (weight-only). ``draft_vocab_size`` keeps only that many of the
    checkpoint's draft vocabulary (0 = the full head).
    """
    path = Path(drafter_path)
    if draft_vocab_size is not None and draft_vocab_size < 0:
        raise ValueError(f"draft_vocab_size must be >= 0 (0: the full head), got {draft_vocab_size}")
    if kwargs.get("int8_weights"):
        if dtype not in (None, torch.bfloat16):
            raise ValueError(f"int8 draft weights run with bfloat16 activations, not {dtype}")
        dtype = torch.bfloat16
    spec = None

    def check_spec(config):  # before any weights load
        nonlocal spec
        spec = DraftSpec.from_config(config, kwargs.get("exits"), kwargs.get("thresholds"))

    draft, _ = load_draft(path, target, target_tokenizer, dtype, check_spec)
    vocab = spec.load_vocab(path, draft_vocab_size) if draft_vocab_size != 0 else None
    return SD2Drafter(draft, draft_vocab=vocab, **kwargs)
