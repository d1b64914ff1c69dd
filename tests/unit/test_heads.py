"""Medusa and Hydra heads on a tiny random Llama: shapes, save/load, a head for another target or
of another kind refused, Hydra's heads queried with each candidate prefix, lossless greedy output."""
from __future__ import annotations

import pytest
import torch

from sd2.draft_heads import DraftHeads, load_draft_heads
from specdec.drafters.heads import HeadsDraft, HeadsDrafter, load_heads_drafter
from specdec.engine import SpeculativeEngine

from helpers import PROMPT, tiny_llama


def heads(target, kind, num_heads=3, draft_vocab=None, seed=0):
    torch.manual_seed(seed)
    made = DraftHeads.for_target(kind, target, num_heads, "tiny", draft_vocab)
    with torch.no_grad():  # trained heads differ from the target's head: make them differ
        for p in made.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return made


@pytest.mark.parametrize("kind", ["medusa", "hydra"])
def test_head_shapes(target, kind):
    h = heads(target, kind, draft_vocab=list(range(0, 64, 2)))
    x = h.normed(torch.randn(5, 64))
    for k in range(3):
        prefix = torch.zeros(5, k + 1, dtype=torch.long) if kind == "hydra" else None
        assert h.head_logits(k, x, prefix).shape == (5, 32)
    if kind == "hydra":
        with pytest.raises(ValueError, match="Hydra head 1 reads 2 token embeddings"):
            h.head_logits(1, x, torch.zeros(5, 1, dtype=torch.long))


@pytest.mark.parametrize("kind", ["medusa", "hydra"])
def test_save_load_round_trip_and_refusals(target, kind, tmp_path):
    h = heads(target, kind)
    h.save(tmp_path / kind)
    loaded = load_draft_heads(tmp_path / kind, target)
    x = h.normed(torch.randn(2, 64))
    prefix = torch.tensor([[3, 4, 5], [6, 7, 8]]) if kind == "hydra" else None
    torch.testing.assert_close(loaded.head_logits(2, x, prefix), h.head_logits(2, x, prefix))
    with pytest.raises(ValueError, match="was trained for a target with num_hidden_layers=4"):
        load_draft_heads(tmp_path / kind, tiny_llama(num_layers=2, vocab_size=64))
    with pytest.raises(ValueError, match="trained for another target"):
        load_draft_heads(tmp_path / kind, tiny_llama(vocab_size=64, seed=9, initializer_range=0.3))
    other = "hydra" if kind == "medusa" else "medusa"
    with pytest.raises(ValueError, match=f"holds {kind} heads, not {other} heads"):
        load_heads_drafter(tmp_path / kind, target, other)


def test_hydra_heads_read_each_candidate_prefix(target):
    h = heads(target, "hydra")
    seen = []
    original = h.head_logits

    def recording(k, x, prefix_ids=None):
        seen.append((k, prefix_ids.tolist()))
        return original(k, x, prefix_ids)

    h.head_logits = recording
    draft = HeadsDraft(h)
    draft.feature = torch.randn(64)
    draft.feed_context(torch.tensor([1, 2, 9]), 8)
    draft.cascade(1, 1)
    draft.append_rows(torch.tensor([4, 5]), torch.tensor([3, 3]), [-1, -1])
    draft.cascade(3, 2)
    draft.append_rows(torch.tensor([6]), torch.tensor([4]), [1])  # under the second row (token 5)
    draft.cascade(4, 1)
    assert seen == [(0, [[9]]), (1, [[9, 4], [9, 5]]), (2, [[9, 5, 6]])]


@pytest.mark.parametrize("kind", ["medusa", "hydra"])
@pytest.mark.parametrize("tree", ["static", "dynamic"])
def test_greedy_output_equals_ar(target, ar_tokens, kind, tree):
    drafter = HeadsDrafter(heads(target, kind), tree=tree, total_token=12, top_k=3)
    out = SpeculativeEngine(target, drafter).generate(PROMPT, 60, set())
    assert out.token_ids == ar_tokens
    assert out.stats["rounds"] > 0 and out.stats["drafted_tokens"] > 0


def test_bad_settings_are_refused(target):
    with pytest.raises(ValueError, match="draft 1..3 tokens deep"):
        HeadsDrafter(heads(target, "medusa"), depth=4)
    with pytest.raises(ValueError, match="draft heads are one of"):
        DraftHeads.for_target("typical", target)
