"""SpS (speculative sampling, Leviathan et al. / Chen et al., 2023): a separate small causal LM
with the target's vocabulary drafts a chain, token by token, on the engine's own model runner
and KV cache.

Greedy: the draft's argmax. Sampling: tokens are drawn, with the engine's generator, from the
draft's own distribution (temperature and top-p as the target uses), which goes to the engine as ``draft_probs`` so its
acceptance test min(1, p/q) keeps the target's distribution exactly.

Draft length adapts as in Hugging Face's assisted generation (the original SpS baseline):
start at ``num_draft_tokens``, +2 after a round where every draft token was accepted, -1
otherwise, within [1, max_draft_tokens].

The draft's cache holds the context plus the drafted tokens it has seen; after verification it
is cropped to the longest prefix that the accepted context shares with it, and the next round
first catches up on the tokens it has not seen (the target's bonus token, at least). It grows as
the context does, up to the draft's own context length; past that the draft proposes nothing, and
``stats()["steps_without_draft"]`` counts those steps.
"""
from __future__ import annotations

import torch

from specdec.drafters.draft_length import AdaptiveDraftLength
from specdec.kv_cache import KVCache
from specdec.llama import LlamaRunner, causal_mask
from specdec.types import DraftTree
from specdec.verify import target_probs
from specdec.vocab import check_same_vocabulary


class SpeculativeSamplingDrafter:
    def __init__(self, draft_model, target_vocab_size: int, temperature: float = 0.0, top_p: float = 1.0,
                 num_draft_tokens: int = 5, max_draft_tokens: int = 20):
        check_same_vocabulary(target_vocab_size, draft_model.config.vocab_size)
        if not 1 <= num_draft_tokens <= max_draft_tokens:
            raise ValueError(f"SpS needs 1 <= num_draft_tokens ({num_draft_tokens}) <= "
                             f"max_draft_tokens ({max_draft_tokens})")
        self.draft_length = AdaptiveDraftLength(num_draft_tokens, max_draft_tokens)
        self.runner = LlamaRunner(draft_model)
        self.cache: KVCache = self.runner.new_cache(min(1024, self.runner.max_position))
        self.temperature, self.top_p = temperature, top_p
        self.seen = torch.empty(0, dtype=torch.long)  # tokens whose KV is in the cache, in order
        self.last_draft_len = 0
        self.steps_without_draft = 0

    def reset(self, prompt_ids: torch.Tensor) -> None:
        self.cache.reset()
        self.seen = torch.empty(0, dtype=torch.long, device=self.runner.device)
        self.draft_length.reset()
        self.last_draft_len = 0
        self.steps_without_draft = 0

    def stats(self) -> dict:
        return {"steps_without_draft": self.steps_without_draft}

    def _feed(self, ids: torch.Tensor) -> torch.Tensor:
        """Run new tokens after the cached ones; logits of the last one, (vocab,)."""
        past = self.cache.lengths[0]
        positions = torch.arange(past, past + ids.numel(), device=ids.device)
        mask = causal_mask(ids.numel(), past, ids.device) if ids.numel() > 1 else None
        h = self.runner.run_layers(self.runner.embed(ids), self.cache, range(self.runner.num_layers), positions, mask)
        self.seen = torch.cat((self.seen, ids))
        return self.runner.head(h[:, -1:])[0]

    def propose(self, context: torch.Tensor, max_depth: int | None = None,
                generator: torch.Generator | None = None) -> DraftTree:
        context = context.to(self.runner.device)
        wanted = min(context.numel() + self.draft_length.value, self.runner.max_position)
        if wanted > self.cache.max_len:
            self.cache = self.cache.grown(min(max(wanted, 2 * self.cache.max_len), self.runner.max_position))
        if context.numel() >= self.cache.max_len:  # past the draft's own context: plain decoding from here
            self.last_draft_len = 0
            self.steps_without_draft += 1
            return DraftTree.empty(context.device)
        # Keep the cached prefix the context still agrees with; always re-feed the root.
        n = min(self.seen.numel(), context.numel() - 1)
        differ = (self.seen[:n] != context[:n]).nonzero()
        keep = int(differ[0]) if differ.numel() else n
        self.cache.crop(keep)
        self.seen = self.seen[:keep]
        logits = self._feed(context[keep:])

        k = min(self.draft_length.value, self.cache.max_len - context.numel(), max_depth or self.draft_length.value)
        tokens, probs = [], []
        for i in range(max(k, 0)):
            if self.temperature > 0:
                q = target_probs(logits, self.temperature, self.top_p)
                token = torch.multinomial(q, 1, generator=generator)
                probs.append(q)
            else:
                token = logits.argmax(-1, keepdim=True)
            tokens.append(token)
            if i + 1 < k:
                logits = self._feed(token)
        self.last_draft_len = len(tokens)
        if not tokens:
            return DraftTree.empty(context.device)
        return DraftTree.chain(torch.cat(tokens), torch.stack(probs) if probs else None)

    def accepted(self, context: torch.Tensor, num_new: int, num_drafted: int) -> None:
        self.draft_length.update(self.last_draft_len, num_drafted)
