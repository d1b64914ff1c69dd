"""The speculative engine every method shares: propose, verify in one target pass, keep, repeat.

Invariant between steps: the target's KV cache holds every accepted token except the last one
(the *root*). A step runs the root and the drafted tree in one pass (tree mask, positions =
root position + depth), accepts a root-to-node path plus the target's bonus token, and compacts
the cache to the root and the accepted path. Prefill therefore runs the prompt minus its last
token, and every new token, the first included, comes from a step: Σ accept_lengths == new tokens.
"""
from __future__ import annotations

import time

import torch

from .drafters.ar import ARDrafter
from .llama import LlamaRunner
from .static_passes import PASSES
from .target import EagerTarget, StaticTarget
from .tree import ancestor_mask, depths
from .types import Drafter, DraftTree, GenerationOutput
from .verify import greedy_accept, sample_accept, target_probs

# Cache rows reserved beyond prompt + max_new_tokens for the tree being verified.
TREE_ROOM = 128


class SpeculativeEngine:
    def __init__(self, model: torch.nn.Module, drafter: Drafter | None = None, temperature: float = 0.0,
                 top_p: float = 1.0, max_length: int | None = None, generator: torch.Generator | None = None,
                 sync_timing: bool = False, target_passes: str = "eager"):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.runner = LlamaRunner(model)
        self.drafter = drafter if drafter is not None else ARDrafter()
        self.temperature = temperature
        self.top_p = top_p
        self.max_length = min(max_length or self.runner.max_position, self.runner.max_position)
        self.generator = self._one_generator(generator)
        # Accurate per-phase times on CUDA need a synchronisation at each boundary (slower).
        self.sync_timing = sync_timing and self.runner.device.type == "cuda"
        # target_passes: eager (each pass at its own shape), static (fixed shapes, run eagerly: the
        # CPU check of the graphed path) or cuda_graphs (fixed shapes, each captured once as a CUDA
        # graph; capture_graphs() records them, outside any question's time).
        if target_passes not in PASSES:
            raise ValueError(f"target_passes must be one of {PASSES}, got {target_passes!r}")
        self.capture_seconds = 0.0
        self.target = (EagerTarget(self.runner) if target_passes == "eager" else
                       StaticTarget(self.runner, self.max_length, cuda_graphs=target_passes == "cuda_graphs"))

    @property
    def device(self) -> torch.device:
        return self.runner.device

    def _one_generator(self, generator: torch.Generator | None) -> torch.Generator | None:
        """The generator every draw of a step uses, the drafter's and the acceptance test's:
        ``generator`` (on the engine's device), or else the device's default one, which
        ``torch.manual_seed`` seeds."""
        device = self.device
        if generator is None:
            if device.type == "cpu":
                return torch.default_generator
            if device.type == "cuda":
                return torch.cuda.default_generators[device.index if device.index is not None else 0]
            return None  # another backend: its own default
        if torch.device(generator.device).type != device.type or (
                device.type == "cuda" and torch.device(generator.device).index not in (None, device.index)):
            raise ValueError(f"the generator is on {generator.device} but the target on {device}: "
                             f"create it with torch.Generator(device='{device}')")
        return generator

    @property
    def observe(self):
        """The drafter's optional VerificationObserver hook, or None."""
        return getattr(self.drafter, "observe", None)

    @property
    def read_logits(self):
        """The drafter's optional TargetLogitsReader hook (Token Recycling), or None."""
        return getattr(self.drafter, "target_logits", None)

    @property
    def read_hidden(self):
        """The drafter's optional TargetHiddenReader hook (EAGLE, Medusa, Hydra), or None."""
        return getattr(self.drafter, "target_hidden", None)

    def capture_graphs(self) -> float:
        """Record the CUDA graphs of every verification shape (with ``cuda_graphs``) and the drafter's
        (one that has ``capture_graphs``); seconds taken, also reported in every generation's stats
        (never inside its time). Shapes already captured are kept, so it may be called again after
        the drafter changes."""
        if isinstance(self.target, StaticTarget):
            self._read_features_of(self.drafter)
            self.capture_seconds += self.target.capture()
        drafter_capture = getattr(self.drafter, "capture_graphs", None)
        if callable(drafter_capture):
            self.capture_seconds += drafter_capture()
        return self.capture_seconds

    def _read_features_of(self, drafter) -> None:
        """The target computes the features the drafter reads (``TargetHiddenReader.feature_layers``)."""
        self.target.feature_layers = tuple(getattr(drafter, "feature_layers", ()))

    def _clock(self) -> float:
        if self.sync_timing:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def check_prompt(self, prompt_ids: list[int]) -> None:
        if not prompt_ids:
            raise ValueError("empty prompt")
        if len(prompt_ids) >= self.max_length:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens does not fit the context of "
                             f"{self.max_length} tokens (max_position_embeddings) with room to generate")

    @torch.inference_mode()
    def generate(self, prompt_ids: list[int], max_new_tokens: int, stop_token_ids: set[int]) -> GenerationOutput:
        self.check_prompt(prompt_ids)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        limit = min(self.max_length, len(prompt_ids) + max_new_tokens)  # context never grows past this
        capacity = min(self.max_length, limit + TREE_ROOM)
        target = self.target
        target.start(capacity)
        context_buf = torch.empty(capacity, dtype=torch.long, device=self.device)
        length = len(prompt_ids)
        context_buf[:length] = torch.tensor(prompt_ids, dtype=torch.long)
        times = {"draft": 0.0, "verify": 0.0, "other": 0.0}

        read_hidden = self.read_hidden
        self._read_features_of(self.drafter)
        self.drafter.reset(context_buf[:length])
        t0 = self._clock()
        if length > 1:
            hidden = target.prefill(context_buf[:length - 1])
        t1 = self._clock()
        times["prefill"] = t1 - t0
        if read_hidden is not None and length > 1:
            read_hidden(hidden)
        times["draft"] += self._clock() - t1

        new_tokens: list[int] = []
        accept_lengths: list[int] = []
        while True:
            t0 = self._clock()
            max_depth = limit - length - 1  # every step also adds the target's own (bonus) token
            # With no room for drafts the drafter is not asked, and this is the last step.
            tree = (self.drafter.propose(context_buf[:length], max_depth, generator=self.generator) if max_depth
                    else DraftTree.empty(self.device))
            t1 = self._clock()
            past = length - 1  # == cache length: the root is not cached yet
            room = capacity - past - 1 if target.max_tokens is None else min(capacity - past, target.max_tokens) - 1
            tokens, parents = self._fit(tree, room)
            n = len(tokens)
            ids = context_buf[past:length]
            if n:
                ids = torch.cat((ids, tree.tokens[:n]))
                tree_mask = ancestor_mask([-1] + [p + 1 for p in parents], self.device)
                positions = torch.tensor([past] + [past + d for d in depths(parents)], device=self.device)
            else:
                tree_mask, positions = None, torch.tensor([past], device=self.device)
            t2 = self._clock()
            logits = target.verify(ids, positions, tree_mask)
            t3 = self._clock()
            if self.temperature == 0:
                path, bonus = greedy_accept(logits, tokens, parents)
            else:
                probs = target_probs(logits, self.temperature, self.top_p)
                draft_probs = tree.draft_probs[:n] if tree.draft_probs is not None else None
                path, bonus = sample_accept(probs, tokens, parents, draft_probs, self.generator)
            if n and self.observe is not None:  # e.g. lookahead learns n-grams from every node
                self.observe(DraftTree(tree.tokens[:n], tree.parents[:n]), logits[1:].argmax(dim=-1))
            if self.read_logits is not None:  # e.g. Token Recycling keeps every row's top-k
                self.read_logits(ids, logits)
            target.keep(torch.tensor([past + 1 + i for i in path], device=self.device), past + 1)
            added = [tokens[i] for i in path] + [bonus]
            added = added[:limit - length]  # max_new_tokens and the context limit
            for j, tok in enumerate(added):
                if tok in stop_token_ids:
                    added = added[:j + 1]
                    break
            context_buf[length:length + len(added)] = torch.tensor(added, dtype=torch.long)
            length += len(added)
            new_tokens += added
            accept_lengths.append(len(added))
            done = length >= limit or added[-1] in stop_token_ids
            t4 = self._clock()
            if read_hidden is not None and not done:  # the rows the cache just took: the root, the path
                read_hidden(target.hidden[[0] + [1 + i for i in path]])
            if max_depth:  # the last step too: drafters count what it kept
                self.drafter.accepted(context_buf[:length], len(added), min(len(path), len(added)))
            t5 = self._clock()
            times["draft"] += (t1 - t0) + (t5 - t4)
            times["verify"] += t3 - t2
            times["other"] += (t2 - t1) + (t4 - t3)
            if done:
                break

        stats = {"time_" + k: v for k, v in times.items()}
        if self.capture_seconds:
            stats["graph_capture_seconds"] = round(self.capture_seconds, 2)
        drafter_stats = getattr(self.drafter, "stats", None)
        if callable(drafter_stats):
            stats.update(drafter_stats())
        return GenerationOutput(new_tokens, len(accept_lengths), accept_lengths, stats)

    @staticmethod
    def _fit(tree: DraftTree, room: int) -> tuple[list[int], list[int]]:
        """The tree as lists, cut to the first ``room`` nodes (a prefix of a topological order is
        still a tree) so it fits the cache."""
        n = min(len(tree), max(room, 0))
        return tree.tokens[:n].tolist(), tree.parents[:n].tolist()

    @torch.inference_mode()
    def time_verification(self, sizes: list[int], past: int = 256, repeats: int = 3) -> dict[int, float]:
        """Seconds of one target pass over ``n`` tokens after ``past`` cached ones, for each n
        (best of ``repeats``): what a tree of n - 1 nodes costs to verify on this hardware."""
        target = self.target
        target.start(past + max(sizes))
        ids = torch.zeros(past + max(sizes), dtype=torch.long, device=self.device)
        target.prefill(ids[:past])
        costs = {}
        for n in sizes:
            tree_mask = torch.ones(n, n, dtype=torch.bool, device=self.device).tril_() if n > 1 else None
            positions = torch.arange(past, past + n, device=self.device)
            best = float("inf")
            for _ in range(repeats + 1):  # the first run warms up
                target.crop(past)
                start = time.perf_counter()
                target.verify(ids[past:past + n], positions, tree_mask)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                best = min(best, time.perf_counter() - start)
            costs[n] = best
        return costs
