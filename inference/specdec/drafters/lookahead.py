"""Lookahead decoding (Fu et al., 2024): Jacobi iteration on a window of guessed future tokens
feeds an n-gram pool; n-grams that start with the last accepted token are verified.

How it fits the engine. Lookahead's two branches both ride in the one DraftTree the target
verifies:

- the *verification branch*: up to ``guess`` (level-1)-token continuations from the pool whose
  key is the last accepted token (the root);
- the *lookahead branch*: the Jacobi window of ``window`` columns and ``level``-1 levels. In
  the original, a level-l token of a column attends to the level-0 tokens before its column and
  to the lower levels of its own column, and n-grams are read along the diagonal. That is a tree:
  column i is the root path ``level0[0..i] + [level1[i], ..., level_top[i]]`` (a level-0 spine
  with one chain per column), and tree positions (prefix length + depth) are the original's.

The target's greedy outputs on the window (rejected nodes included) arrive through the
optional ``observe`` hook (``specdec.types.VerificationObserver``), which the engine calls
after each verification pass. From the top node of column i: the n-gram
``(level0[i], level1[i], ..., level_top[i], output_i)`` goes into the pool (once all levels are
filled) and the levels slide down one, the outputs becoming the new top level, which keeps
every token at its position when one token is accepted per step (the original's default
assumption). Window nodes are also ordinary candidates: a window path the target agrees with
is accepted too (still lossless).

Differences from the original, stated plainly: (1) it also hangs one column directly off the
root (an n-gram keyed by the current last token); here every column hangs off a spine token,
so ``--window 7`` here is close to the original's window 8 without that column; (2) by default
the pool starts with the prompt's n-grams (``pool_from_prompt``, an option of the original that
is off there by default; ``--no-pool-from-prompt`` restores that).
"""
from __future__ import annotations

import random

import torch

from specdec.types import DraftTree


class LookaheadDrafter:
    def __init__(self, level: int = 5, window: int = 7, guess: int = 7, pool_from_prompt: bool = True,
                 seed: int = 0):
        for name, value, low in (("level", level, 2), ("window", window, 1), ("guess", guess, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"lookahead {name} must be an integer >= {low}, got {value!r}")
        self.ngram_size, self.window, self.guess = level, window, guess
        self.pool_from_prompt, self.seed = pool_from_prompt, seed
        self.pool: dict[int, dict[tuple[int, ...], None]] = {}
        self.levels: list[list[int]] = []
        self._column_nodes: list[int] | None = None  # tree node on top of each column, awaiting observe()
        self._observed = False  # has the engine reported outputs in this sequence?
        self.skipped_window_updates = 0  # rounds whose window the engine cut (near the context limit)

    def reset(self, prompt_ids: torch.Tensor) -> None:
        prompt = prompt_ids.tolist() or [0]
        rng = random.Random(self.seed)
        self.pool = {}
        self.levels = [[rng.choice(prompt) for _ in range(self.window)]]  # Jacobi starts from prompt tokens
        self._column_nodes = None
        self._observed = False
        self.skipped_window_updates = 0
        if self.pool_from_prompt:
            n = self.ngram_size
            for i in range(len(prompt) - n + 1):
                self.remember(prompt[i: i + n])

    def stats(self) -> dict:
        return {"skipped_window_updates": self.skipped_window_updates}

    def remember(self, ngram: list[int]) -> None:
        """Pool entry keyed by the n-gram's first token; each key keeps its ``guess`` most recent."""
        entries = self.pool.setdefault(ngram[0], {})
        continuation = tuple(ngram[1:])
        entries.pop(continuation, None)
        entries[continuation] = None
        if len(entries) > self.guess:
            del entries[next(iter(entries))]

    def propose(self, context: torch.Tensor, max_depth: int | None = None,
                generator: torch.Generator | None = None) -> DraftTree:
        if self._column_nodes is not None and not self._observed:
            raise RuntimeError("lookahead needs the target's outputs on its window: the engine must call "
                               "drafter.observe(tree, target_argmax) after each verification pass")
        guesses = list(self.pool.get(int(context[-1]), ()))
        spine = self.levels[0]
        columns = [spine[: i + 1] + [level[i] for level in self.levels[1:]] for i in range(self.window)]
        tree, paths = DraftTree.from_sequences(guesses + columns, context.device)
        self._column_nodes = [path[-1] for path in paths[len(guesses):]]
        return tree

    def observe(self, tree: DraftTree, target_argmax: torch.Tensor) -> None:
        columns, self._column_nodes = self._column_nodes, None
        self._observed = True
        if columns is None or max(columns) >= len(target_argmax):  # the engine cut the tree to fit: skip
            self.skipped_window_updates += 1
            return
        outputs = target_argmax[columns].tolist()
        if len(self.levels) == self.ngram_size - 1:
            for i in range(self.window):
                self.remember([level[i] for level in self.levels] + [outputs[i]])
            self.levels = self.levels[1:] + [outputs]
        else:  # still filling the window's levels
            self.levels.append(outputs)

    def accepted(self, context: torch.Tensor, num_new: int, num_drafted: int) -> None:
        pass
