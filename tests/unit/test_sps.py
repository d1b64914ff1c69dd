"""SpS drafter on tiny random Llamas: its chains and distributions equal the draft model's own
HF forward across rounds (cache crop and catch-up), adaptive length, vocabulary check."""
import pytest
import torch

from specdec.drafters.sps import SpeculativeSamplingDrafter

from helpers import tiny_llama


def hf_greedy(model, context: list[int], n: int) -> list[int]:
    out = model.generate(torch.tensor([context]), max_new_tokens=n, do_sample=False, min_new_tokens=n,
                         attention_mask=torch.ones(1, len(context), dtype=torch.long), pad_token_id=0)
    return out[0, len(context):].tolist()


@torch.inference_mode()
def test_greedy_chains_follow_the_draft_model_across_rounds():
    draft = tiny_llama(num_layers=2, seed=1)
    drafter = SpeculativeSamplingDrafter(draft, target_vocab_size=128, num_draft_tokens=4)
    context = torch.tensor([5, 17, 3, 99, 42])
    drafter.reset(context)
    for accepted_drafts, bonus in ((2, 7), (4, 11), (0, 64), (1, 3)):
        tree = drafter.propose(context)
        assert tree.parents.tolist() == list(range(-1, len(tree) - 1))
        assert tree.tokens.tolist() == hf_greedy(draft, context.tolist(), len(tree))
        accepted = tree.tokens[:accepted_drafts]
        context = torch.cat((context, accepted, torch.tensor([bonus])))
        before = drafter.draft_length.value
        drafter.accepted(context, len(accepted) + 1, len(accepted))
        all_in = len(accepted) == len(tree)
        assert drafter.draft_length.value == (min(before + 2, 20) if all_in else max(before - 1, 1))


@torch.inference_mode()
def test_sampled_tokens_come_with_the_distribution_they_were_drawn_from():
    draft = tiny_llama(num_layers=2, seed=2)
    drafter = SpeculativeSamplingDrafter(draft, target_vocab_size=128, temperature=0.7, top_p=0.9,
                                         num_draft_tokens=5)
    context = torch.tensor([1, 2, 3, 4])
    drafter.reset(context)
    torch.manual_seed(0)
    tree = drafter.propose(context)
    assert tree.draft_probs is not None and tree.draft_probs.shape == (len(tree), 128)
    seq = context.tolist()
    for i, token in enumerate(tree.tokens.tolist()):
        logits = draft(torch.tensor([seq])).logits[0, -1] / 0.7
        probs = torch.softmax(logits, -1)
        q = tree.draft_probs[i]
        assert torch.isclose(q.sum(), torch.tensor(1.0), atol=1e-5) and q[token] > 0
        kept = q > 0  # top-p keeps the smallest set of most likely tokens with mass >= 0.9
        assert probs[kept].sum() >= 0.9 - 1e-5
        assert torch.allclose(q[kept], probs[kept] / probs[kept].sum(), atol=1e-5)
        seq.append(token)


def test_a_draft_with_another_vocabulary_is_refused():
    with pytest.raises(ValueError, match="vocabulary"):
        SpeculativeSamplingDrafter(tiny_llama(vocab_size=96), target_vocab_size=128)
    with pytest.raises(ValueError, match="num_draft_tokens"):
        SpeculativeSamplingDrafter(tiny_llama(), target_vocab_size=128, num_draft_tokens=0)


@torch.inference_mode()
def test_past_the_drafts_own_context_it_proposes_nothing_and_counts_the_steps():
    drafter = SpeculativeSamplingDrafter(tiny_llama(num_layers=1, max_position_embeddings=16), target_vocab_size=128)
    context = torch.arange(20) % 128
    drafter.reset(context)
    assert len(drafter.propose(context)) == 0 and drafter.stats() == {"steps_without_draft": 1}
    short = context[:12]
    drafter.reset(short)
    assert 1 <= len(drafter.propose(short)) <= 16 - 12 and drafter.stats() == {"steps_without_draft": 0}


@torch.inference_mode()
def test_the_drafts_cache_grows_with_the_context():
    """Past its first allocation (1,024 rows) the draft keeps drafting, from the right cache."""
    from specdec.engine import SpeculativeEngine

    model = tiny_llama(num_layers=2, vocab_size=64, initializer_range=0.3, max_position_embeddings=2048)
    drafter = SpeculativeSamplingDrafter(model, target_vocab_size=64)  # the target itself: every draft is right
    first = drafter.cache.max_len
    prompt = (torch.arange(1100) % 61).tolist()
    reference = SpeculativeEngine(model).generate(prompt, 40, set()).token_ids
    out = SpeculativeEngine(model, drafter).generate(prompt, 40, set())
    assert drafter.cache.max_len > first == 1024
    assert out.token_ids == reference and out.stats["steps_without_draft"] == 0
    assert out.decoding_steps <= 10  # drafts of 5, 7, 9, ... all accepted
