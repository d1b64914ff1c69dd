"""The small types every part of the engine and every drafter share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class DraftTree:
    """Candidate tokens that follow the current last token (the *root*, not stored here).

    Nodes are in topological order: ``parents[i] < i``, and ``-1`` means a child of the root.
    A chain of n tokens has ``parents = [-1, 0, 1, ..., n-2]``. ``draft_probs`` (optional, one
    row per node over the full vocabulary) is the distribution each node was *sampled from*;
    sampling verification needs it (q in the acceptance test). Without it, sampling
    verification treats proposals as deterministic (q = one-hot), which is still lossless.
    """

    tokens: torch.Tensor  # (n,) long
    parents: torch.Tensor  # (n,) long
    draft_probs: torch.Tensor | None = None  # (n, vocab) float, optional

    def __len__(self) -> int:
        return int(self.tokens.numel())

    @staticmethod
    def empty(device: torch.device | str = "cpu") -> DraftTree:
        none = torch.empty(0, dtype=torch.long, device=device)
        return DraftTree(none, none.clone())

    @staticmethod
    def chain(tokens: torch.Tensor, draft_probs: torch.Tensor | None = None) -> DraftTree:
        n = tokens.numel()
        return DraftTree(tokens, torch.arange(-1, n - 1, device=tokens.device), draft_probs)

    @staticmethod
    def from_sequences(sequences, device: torch.device | str = "cpu") -> tuple[DraftTree, list[list[int]]]:
        """Merge token sequences (each one starting right after the root) into a trie: sequences
        sharing a prefix share its nodes. Returns the tree and, per sequence, its tokens' node ids."""
        node_of: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
        tokens: list[int] = []
        parents: list[int] = []
        paths = []
        for seq in sequences:
            parent, path = -1, []
            for token in seq:
                node = node_of.setdefault((parent, int(token)), len(tokens))
                if node == len(tokens):
                    tokens.append(int(token))
                    parents.append(parent)
                path.append(node)
                parent = node
            paths.append(path)
        long = dict(dtype=torch.long, device=device)
        return DraftTree(torch.tensor(tokens, **long), torch.tensor(parents, **long)), paths


class Drafter(Protocol):
    """What a method implements. ``context`` is every accepted token so far (prompt included),
    as a 1-D long tensor on the engine's device; its last token is the tree's root.

    Randomness. The engine owns one ``torch.Generator`` on its device (``SpeculativeEngine.generator``)
    and hands it to every ``propose`` call. A drafter that samples (a chain drawn from its q) draws
    with that generator only, never with the global RNG or a generator of its own, so the draws of
    drafter and verification form one seeded stream and a seed reproduces a sampled run token for
    token. Drafters whose proposals are deterministic (top-k trees, lookups) ignore it."""

    def reset(self, prompt_ids: torch.Tensor) -> None:
        """A new sequence starts (drop any per-sequence state, e.g. a draft KV cache)."""

    def propose(self, context: torch.Tensor, max_depth: int | None = None,
                generator: torch.Generator | None = None) -> DraftTree:
        """Candidates to verify after ``context[-1]``. ``max_depth``: no path longer than this can
        be kept (the tokens still wanted, less the target's bonus token); a drafter may draft less
        near the end of an answer, and the engine never asks when it is 0. ``generator``: the
        engine's generator, on the context's device; sample with it and nothing else (None, only
        when called outside the engine: the device's default generator). A sampled node's
        ``draft_probs`` row is the distribution it was drawn from (q > 0 at its token); a node not
        drawn from a distribution (a lookup token beside a sampled chain) gets a one-hot row."""

    def accepted(self, context: torch.Tensor, num_new: int, num_drafted: int) -> None:
        """Verification added ``num_new`` tokens to the end of ``context``: the first
        ``num_drafted`` are the accepted path's drafted nodes, then (unless a stop token or the
        length limit cut the step short) the target's own bonus token. Update adaptive state
        (draft length, caches) and counts. Also called after the last step."""


class VerificationObserver(Protocol):
    """Optional extra a drafter may implement (the engine calls it when present, before
    ``accepted``): the target's greedy next token at *every* node of the tree just verified,
    rejected nodes included. Lookahead decoding builds its n-gram pool from these outputs on
    its Jacobi-window nodes; other drafters ignore it."""

    def observe(self, tree: DraftTree, target_argmax: torch.Tensor) -> None:
        """``target_argmax[i]`` (long, shape (len(tree),)) = argmax of the target's logits at node i."""


class TargetLogitsReader(Protocol):
    """Optional extra a drafter may implement: the target's logits at *every* row of the pass just
    verified (the root's, then each tree node's, rejected nodes included). The engine calls it
    when present, before ``accepted``. Token Recycling keeps each row's top-k candidates."""

    def target_logits(self, tokens: torch.Tensor, logits: torch.Tensor) -> None:
        """``tokens`` (n + 1,): the pass's input, the root then the verified nodes; ``logits``
        (n + 1, vocab): the target's logits for the token after each of them."""


class TargetHiddenReader(Protocol):
    """Optional extra for drafters that draft from the target's own features (EAGLE, Medusa,
    Hydra). The engine calls it whenever the target's cache takes tokens: after prefill (the prompt
    less its last token) and after each verification (the root and the accepted path, before
    ``accepted``), so the drafter holds a feature for every cached token, in order.

    ``feature_layers`` (optional attribute, increasing layer counts): the drafter reads the outputs
    after each of those many layers, side by side, instead of the last layer's (EAGLE-3's fusion of
    low, middle and high layers)."""

    feature_layers: tuple[int, ...] = ()

    def target_hidden(self, hidden: torch.Tensor) -> None:
        """``hidden`` (n, hidden_size): the target's last decoder layer's output (before the final
        norm) for the n tokens just cached, in position order; with ``feature_layers``
        (n, len(feature_layers) * hidden_size)."""


@dataclass
class GenerationOutput:
    """One generate call's result, in the units Spec-Bench records."""

    token_ids: list[int]  # new tokens only (a stop token that ended generation included)
    decoding_steps: int  # target forward passes after prefill
    accept_lengths: list[int]  # tokens added per step, the bonus token included (AR: all 1)
    stats: dict = field(default_factory=dict)  # method extras, e.g. {"exit_tokens": {6: 40, 12: 9}}

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids)
