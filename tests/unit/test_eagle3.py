"""EAGLE-3 on tiny random Llamas: the fused features, training-time test's unroll against the
inference rows, the loss, save/load and the target check, lossless greedy output (sampling:
test_sampling.py)."""
from __future__ import annotations

import json

import pytest
import torch

from sd2.eagle3_head import Eagle3Head, default_feature_layers, load_eagle3_head
from sd2train.eagle3 import Eagle3TrainingArguments, check_arguments, eagle3_loss
from sd2train.exits import target_states
from sd2train.preprocess import IGNORE_INDEX
from specdec.drafters.eagle3 import Eagle3Drafter, eagle3_runner
from specdec.engine import SpeculativeEngine
from specdec.llama import causal_mask

from helpers import PROMPT, labelled_batch, tiny_llama, varied_llama

VOCAB = list(range(0, 64, 2)) + [1, 3]  # a draft vocabulary: 34 of the 64 ids


@pytest.fixture(scope="module")
def target():
    return varied_llama(num_layers=8)


def fresh_head(target, vocab=VOCAB, noise=0.05, **kw) -> Eagle3Head:
    torch.manual_seed(0)
    head = Eagle3Head.for_target(target, vocab, target_path="tiny", **kw)
    with torch.no_grad():  # away from its start (the embedding half of attention starts at zero)
        for p in head.parameters():
            p.add_(noise * torch.randn_like(p))
    return head.eval()


def test_the_fusion_reads_low_middle_and_high_layers(target):
    assert default_feature_layers(30) == (2, 15, 27)  # the default target's
    head = fresh_head(target)
    assert head.feature_layers == (2, 4, 5)
    input_ids, _, mask = labelled_batch(vocab=64)
    features, logits = target_states(target, head.feature_layers, input_ids, mask)
    assert features.shape == (2, 12, 3 * 64) and logits.shape == (2, 12, 64)
    out = target(input_ids, attention_mask=mask, output_hidden_states=True)
    for i, k in enumerate(head.feature_layers):  # hidden_states[k]: after k layers (k < depth: not normed)
        torch.testing.assert_close(features[..., 64 * i:64 * (i + 1)], out.hidden_states[k])
    assert head.fc.weight.shape == (64, 3 * 64)
    assert head.layer.self_attn.q_proj.weight.shape[1] == 2 * 64  # [embedding | feature]
    steps = head(input_ids, features, 3)
    assert [s.shape for s in steps] == [(2, 12, len(VOCAB))] * 3
    with pytest.raises(ValueError, match="too shallow"):
        Eagle3Head.for_target(tiny_llama(num_layers=4))
    with pytest.raises(ValueError, match="3 increasing layer counts"):
        Eagle3Head.for_target(target, feature_layers=(2, 2, 5))


def test_a_fresh_head_starts_from_the_target(target):
    head = Eagle3Head.for_target(target, VOCAB)
    features = torch.randn(1, 5, 3 * 64)
    assert torch.equal(head.fc(features), features[..., -64:])  # the high layer passed through
    assert torch.equal(head.lm_head.weight, target.lm_head.weight[VOCAB])
    assert torch.equal(head.layer.self_attn.q_proj.weight[:, 64:], target.model.layers[5].self_attn.q_proj.weight)
    assert torch.equal(head.layer.mlp.down_proj.weight, target.model.layers[5].mlp.down_proj.weight)


def test_training_time_test_feeds_each_step_the_heads_own_output(target):
    """Row t at step j of the unroll equals the inference rows: the context rows t' <= t with the
    target's fused features, then a chain of j rows at positions t+1.. each reading the previous
    row's output (a tree node reading its parent's) and the next true token."""
    head = fresh_head(target, noise=0.2)
    runner = eagle3_runner(head)
    ids = labelled_batch(vocab=64)[0][:1]
    features, _ = target_states(target, head.feature_layers, ids)
    with torch.no_grad():
        unrolled = head.unroll(ids, features, 3)
        fused = head.fc(features[0])
        embed = head.embed(ids[0])
        for t in (0, 4, 7):
            cache = runner.new_cache(16)
            rows = torch.cat((embed[1:t + 2], fused[:t + 1]), dim=-1)[None]  # (x_{s+1}, g_s), s <= t
            out = runner.run_layers(rows, cache, range(1), torch.arange(t + 1), causal_mask(t + 1, 0, "cpu"))[0, -1]
            torch.testing.assert_close(out, unrolled[0][0, t], atol=1e-4, rtol=1e-4)
            for j in (1, 2):
                row = torch.cat((embed[t + j + 1], out))[None, None]  # x_{t+j+1}, the previous output
                out = runner.run_layers(row, cache, range(1), torch.tensor([t + j]), None)[0, -1]
                torch.testing.assert_close(out, unrolled[j][0, t], atol=1e-4, rtol=1e-4)
    # Step 1 really reads step 0's output: change it and step 1 changes, the step-0 rows do not.
    assert not torch.allclose(unrolled[1], unrolled[0])


def test_the_loss_counts_assistant_rows_whose_target_token_is_drafted_and_falls_when_trained():
    target = tiny_llama(num_layers=8, vocab_size=64, initializer_range=0.3).requires_grad_(False)
    head = Eagle3Head.for_target(target, VOCAB).train()
    input_ids, labels, mask = labelled_batch(vocab=64)
    features, logits = target_states(target, head.feature_layers, input_ids, mask)
    result = eagle3_loss(head, features, logits, input_ids, labels, steps=3)
    in_vocab = torch.zeros(64, dtype=torch.bool)
    in_vocab[VOCAB] = True
    expected_rows = int(((labels[:, 2:] != IGNORE_INDEX) & in_vocab[logits.argmax(-1)][:, 1:-1]).sum())
    assert result.num_rows == expected_rows > 0 and len(result.step_losses) == 3
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        result = eagle3_loss(head, features, logits, input_ids, labels, steps=3)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        losses.append(result)
    assert losses[-1].loss.item() < 0.5 * losses[0].loss.item(), [r.loss.item() for r in losses]
    assert all(last < first for first, last in zip(losses[0].step_losses, losses[-1].step_losses))
    assert all(p.grad is None for p in target.parameters())  # the target stays frozen


def test_save_and_load_give_the_same_head(target, tmp_path):
    head = fresh_head(target)
    head.save(tmp_path / "head")
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    assert config["sd2_eagle3"]["target"] == "tiny" and config["sd2_eagle3"]["feature_layers"] == [2, 4, 5]
    assert json.loads((tmp_path / "head" / "draft_vocab.json").read_text()) == VOCAB
    loaded = load_eagle3_head(tmp_path / "head", target)
    input_ids, _, mask = labelled_batch(vocab=64)
    features, _ = target_states(target, head.feature_layers, input_ids, mask)
    with torch.no_grad():
        for a, b in zip(loaded(input_ids, features, 2), head(input_ids, features, 2)):
            assert torch.equal(a, b)
    assert torch.equal(loaded.vocab_ids, torch.tensor(VOCAB))


@pytest.mark.parametrize("other, message", [
    (dict(hidden=32), "hidden_size=64, this target has 32"),
    (dict(num_layers=9), "num_hidden_layers=8, this target has 9"),
    (dict(seed=1), "trained for another target .*embedding weights differ"),
])
def test_a_head_for_another_target_is_refused(target, tmp_path, other, message):
    fresh_head(target).save(tmp_path / "head")
    with pytest.raises(ValueError, match=message):
        load_eagle3_head(tmp_path / "head", varied_llama(**{"num_layers": 8, **other}))


def test_an_eagle_head_or_a_model_is_not_an_eagle3_head(target, tmp_path):
    from sd2.eagle_head import EagleHead

    EagleHead.for_target(target).save(tmp_path / "eagle")
    with pytest.raises(ValueError, match="not an EAGLE-3 head .*use eagle or eagle2"):
        load_eagle3_head(tmp_path / "eagle", target)
    with pytest.raises(ValueError, match="config.json missing"):
        load_eagle3_head(tmp_path / "nothing", target)


@pytest.mark.parametrize("settings, message", [
    (dict(ttt_steps=0), "--ttt_steps must be >= 1"),
    (dict(step_weight_decay=0.0), "--step_weight_decay must be in"),
    (dict(gradient_checkpointing=True), "nothing to checkpoint"),
])
def test_bad_training_arguments_are_clear_errors(settings, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        check_arguments(Eagle3TrainingArguments(output_dir=str(tmp_path), use_cpu=True, **settings))


@pytest.mark.parametrize("passes", ["eager", "static"])
@pytest.mark.parametrize("size", [30, 4])
def test_greedy_output_equals_ar(target, passes, size):
    """Eager, and with the target's passes at fixed shapes (the CUDA-graph path on a CPU), which
    hand over the three layers' states in segments."""
    ar = SpeculativeEngine(target).generate(PROMPT, 60, set()).token_ids
    drafter = Eagle3Drafter(fresh_head(target), total_token=size, depth=3, top_k=4)
    out = SpeculativeEngine(target, drafter, target_passes=passes).generate(PROMPT, 60, set())
    assert out.token_ids == ar
    assert out.stats["rounds"] > 0 and out.stats["drafted_tokens"] > 0


def test_the_drafter_holds_the_fused_features_of_every_cached_token(target):
    drafter = Eagle3Drafter(fresh_head(target), total_token=10, depth=2, top_k=3)
    out = SpeculativeEngine(target, drafter).generate(PROMPT, 30, set())
    ids = torch.tensor([PROMPT + out.token_ids])
    n = drafter.draft.known
    assert len(PROMPT) + 30 - 2 <= n <= ids.shape[1]
    features, _ = target_states(target, drafter.feature_layers, ids)
    with torch.no_grad():
        expected = drafter.draft.head.fc(features[0, :n])
    torch.testing.assert_close(drafter.draft.features[:n], expected, atol=1e-3, rtol=1e-3)


def test_the_report_measures_depths_1_to_3(target):
    from sd2train.agreement import evaluate_eagle3

    torch.manual_seed(0)
    sequences = [torch.randint(0, 64, (20,)).tolist(), torch.randint(0, 64, (15,)).tolist()]
    head = fresh_head(target)
    report = evaluate_eagle3(head, target, sequences, [8, 5])
    assert report["positions"] == (20 - 8) + (15 - 5) and set(report["per_depth"]) == {1, 2, 3}
    for row in report["per_depth"].values():  # each depth's rank accuracies are its top-4 recall's parts
        assert len(row["rank_accuracy"]) == 4 and sum(row["rank_accuracy"]) == pytest.approx(row["top4_recall"])
    # Depth 2 by hand for the first sequence: row p-2 of the second unrolled step.
    ids = torch.tensor([sequences[0]])
    with torch.no_grad():
        features, logits = target_states(target, head.feature_layers, ids)
        mine = head.vocab_ids[head(ids, features, 2)[1][0, 5:17].argmax(-1)]
    theirs = logits[0, 7:19].argmax(-1)
    first = evaluate_eagle3(head, target, sequences[:1], [8], depths=(2,))
    assert first["per_depth"][2]["top1_agreement"] == pytest.approx(float((mine == theirs).float().mean()))
    with pytest.raises(ValueError, match="needs prompts of at least 4 tokens"):
        evaluate_eagle3(head, target, sequences, [3, 5])
