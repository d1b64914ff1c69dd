"""Training Medusa and Hydra heads: the loss by hand (masking, head weighting, Hydra's teacher
forcing), the features, a few steps, the trainer end to end, save/load and the held-out report,
on tiny random Llamas."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from sd2.draft_heads import load_draft_heads
from sd2train.exits import last_layer_states
from sd2train.heads import (
    HeadsModelArguments,
    HeadsTrainingArguments,
    TrainedHeads,
    check_arguments,
    draft_index_of,
    heads_loss,
)
from sd2train.preprocess import IGNORE_INDEX

from helpers import hook_features_checked, labelled_batch, tiny_llama

DRAFT_VOCAB = list(range(0, 128, 2))  # the even token ids


@pytest.fixture(scope="module")
def target():
    # A larger init than tiny_llama's: a peaked next-token distribution, features of some size.
    return tiny_llama(num_layers=3, initializer_range=0.3).requires_grad_(False)


def fresh_heads(target, kind, num_heads=3, draft_vocab=None, seed=0):
    heads = TrainedHeads.for_target(kind, target, num_heads, "tiny-target", draft_vocab)
    torch.manual_seed(seed)
    with torch.no_grad():  # away from their start (the target's head behind identity blocks)
        for p in heads.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return heads


def normed_features(target, heads, input_ids, mask=None):
    with torch.no_grad():
        return heads.normed(last_layer_states(target, input_ids, mask))


def hand_loss(heads, x, input_ids, labels, decay=0.8, draft_vocab=None):
    """Medusa-1's loss one row at a time: head k at row t against token t + k + 2, Hydra's head
    reading the true tokens t+1..t+k+1; rows whose token is unlabelled or outside the draft
    vocabulary do not count."""
    total, per_head = 0.0, []
    for k in range(heads.num_heads):
        terms = []
        for b in range(input_ids.shape[0]):
            for t in range(input_ids.shape[1] - k - 2):
                token = int(labels[b, t + k + 2])
                if token == IGNORE_INDEX or (draft_vocab is not None and token not in draft_vocab):
                    continue
                wanted = draft_vocab.index(token) if draft_vocab is not None else token
                prefix = input_ids[b, t + 1:t + k + 2][None] if heads.kind == "hydra" else None
                logits = heads.head_logits(k, x[b, t][None], prefix)
                terms.append(F.cross_entropy(logits, torch.tensor([wanted])))
        ce = torch.stack(terms).mean()
        per_head.append(ce.item())
        total = total + decay ** k * ce
    return total, per_head


@pytest.mark.parametrize("kind", ["medusa", "hydra"])
@pytest.mark.parametrize("draft_vocab", [None, DRAFT_VOCAB], ids=["full-vocab", "draft-vocab"])
def test_the_loss_equals_a_hand_computation(target, kind, draft_vocab):
    heads = fresh_heads(target, kind, draft_vocab=draft_vocab)
    input_ids, labels, mask = labelled_batch()
    x = normed_features(target, heads, input_ids, mask)
    index = draft_index_of(draft_vocab, 128) if draft_vocab else None
    result = heads_loss(heads, x, input_ids, labels, draft_index=index)
    expected, per_head = hand_loss(heads, x, input_ids, labels, draft_vocab=draft_vocab)
    assert torch.allclose(result.loss, expected, rtol=1e-5)
    assert result.per_head == pytest.approx(per_head, rel=1e-5)
    # Every reply token (8 and 5) has a row k + 2 before it; with the draft vocabulary only the even ones count.
    counted = [labels[:, k + 2:] != IGNORE_INDEX for k in range(3)]
    if draft_vocab is None:
        assert result.rows == [8 + 5] * 3
    else:
        counted = [c & (labels[:, k + 2:] % 2 == 0) for k, c in enumerate(counted)]
        assert result.rows == [int(c.sum()) for c in counted] and result.rows[0] < 8 + 5


def test_heads_are_weighted_by_decay_to_the_power_k(target):
    heads = fresh_heads(target, "medusa")
    input_ids, labels, mask = labelled_batch()
    x = normed_features(target, heads, input_ids, mask)
    for decay in (0.8, 0.5, 1.0):
        result = heads_loss(heads, x, input_ids, labels, decay)
        weighted = sum(decay ** k * ce for k, ce in enumerate(result.per_head))
        assert result.loss.item() == pytest.approx(weighted, rel=1e-5)
    # Each head's cross-entropy does not depend on the weighting.
    assert heads_loss(heads, x, input_ids, labels, 0.5).per_head == heads_loss(heads, x, input_ids, labels).per_head


def test_only_assistant_tokens_count(target):
    heads = fresh_heads(target, "hydra")
    input_ids, labels, mask = labelled_batch()
    x = normed_features(target, heads, input_ids, mask)
    base = heads_loss(heads, x, input_ids, labels)
    # A prompt token's label never counts: relabelling it as a reply token changes the rows.
    one_more = labels.clone()
    one_more[0, 3] = input_ids[0, 3]
    wider = heads_loss(heads, x, input_ids, one_more)
    assert wider.rows[0] == base.rows[0] + 1 and wider.loss.item() != base.loss.item()
    # Padding's features and tokens feed no counted row of Medusa's heads.
    medusa = fresh_heads(target, "medusa")
    changed = x.clone()
    changed[1, 9:] += 100.0
    assert torch.allclose(heads_loss(medusa, changed, input_ids, labels).loss,
                          heads_loss(medusa, x, input_ids, labels).loss)
    nothing = heads_loss(heads, x, input_ids, torch.full_like(labels, IGNORE_INDEX))
    assert nothing.loss.item() == 0.0 and nothing.loss.requires_grad and nothing.rows == [0, 0, 0]


def test_hydra_heads_read_the_true_tokens_before_theirs(target):
    heads = fresh_heads(target, "hydra")
    input_ids, labels, mask = labelled_batch()
    x = normed_features(target, heads, input_ids, mask)
    seen = {}
    original = heads.head_logits

    def recording(k, rows_x, prefix_ids=None):
        seen[k] = prefix_ids
        return original(k, rows_x, prefix_ids)

    heads.head_logits = recording
    heads_loss(heads, x, input_ids, labels)
    for k in range(3):  # counted rows in order: sequence 0's, then sequence 1's
        rows = [(b, t) for b in range(2) for t in range(12 - k - 2) if labels[b, t + k + 2] != IGNORE_INDEX]
        expected = torch.stack([input_ids[b, t + 1:t + k + 2] for b, t in rows])
        assert torch.equal(seen[k], expected)


def test_a_batch_shorter_than_the_heads_reach(target):
    heads = fresh_heads(target, "hydra", num_heads=4)
    input_ids, labels, mask = labelled_batch()
    short_ids, short_labels = input_ids[:, :4], input_ids[:, :4].clone()
    result = heads_loss(heads, normed_features(target, heads, short_ids), short_ids, short_labels)
    assert result.rows == [2 * 2, 2 * 1, 0, 0] and result.loss.requires_grad


def test_hook_features_are_the_runners_last_layer_output_and_the_heads_read_them_normed(target):
    ids = labelled_batch()[0][0]
    features = hook_features_checked(target, ids)
    heads = fresh_heads(target, "medusa")
    x = heads.normed(features)
    # The target's own head over the same x predicts t + 1: the heads' x is what the target reads.
    assert torch.allclose(target.lm_head(x), target(ids[None]).logits, atol=1e-5)


@pytest.mark.parametrize("kind", ["medusa", "hydra"])
def test_training_steps_lower_the_loss_on_a_fixed_batch(target, kind):
    heads = TrainedHeads.for_target(kind, target, 3, draft_vocab=DRAFT_VOCAB).train()
    input_ids, labels, mask = labelled_batch()
    x = normed_features(target, heads, input_ids, mask)
    index = draft_index_of(DRAFT_VOCAB, 128)
    optimizer = torch.optim.AdamW(heads.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        result = heads_loss(heads, x, input_ids, labels, draft_index=index)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        losses.append(result.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(p.grad is None for p in target.parameters())  # the target stays frozen


@pytest.mark.parametrize("kind", ["medusa", "hydra"])
def test_save_and_load_give_the_same_heads(target, kind, tmp_path):
    heads = fresh_heads(target, kind, draft_vocab=DRAFT_VOCAB).eval()
    heads.save(tmp_path / kind)
    config = json.loads((tmp_path / kind / "config.json").read_text())["sd2_heads"]
    assert config["kind"] == kind and config["target"] == "tiny-target"
    assert json.loads((tmp_path / kind / config["draft_vocab_file"]).read_text()) == DRAFT_VOCAB  # a file, as every folder
    loaded = load_draft_heads(tmp_path / kind, target)
    assert loaded.draft_vocab == DRAFT_VOCAB
    x = heads.normed(torch.randn(4, 64))
    prefix = torch.randint(0, 128, (4, 3)) if kind == "hydra" else None
    with torch.no_grad():
        assert torch.equal(loaded.head_logits(2, x, prefix), heads.head_logits(2, x, prefix))


def test_draft_index_maps_tokens_to_rows_and_leaves_out_the_rest():
    index = draft_index_of([7, 3, 5], 10)
    assert index.tolist() == [IGNORE_INDEX] * 3 + [1, IGNORE_INDEX, 2, IGNORE_INDEX, 0] + [IGNORE_INDEX] * 2


@pytest.mark.parametrize("model_settings, settings, message", [
    (dict(kind="eagle"), {}, "--kind must be one of medusa, hydra"),
    (dict(num_heads=0), {}, "--num_heads must be >= 1"),
    (dict(draft_vocab_size=-1), {}, "--draft_vocab_size must be >= 0"),
    ({}, dict(head_loss_decay=0.0), "--head_loss_decay must be > 0"),
    ({}, dict(gradient_checkpointing=True), "nothing to checkpoint"),
])
def test_bad_arguments_are_clear_errors(model_settings, settings, message, tmp_path):
    model_args = HeadsModelArguments(target_model_name_or_path="unused", **model_settings)
    args = HeadsTrainingArguments(output_dir=str(tmp_path), use_cpu=True, **settings)
    with pytest.raises(ValueError, match=message):
        check_arguments(model_args, args)


@pytest.mark.parametrize("kind", ["medusa", "hydra"])
def test_the_trainer_runs_steps_and_saves_loadable_heads(target, kind, tmp_path):
    from sd2train.heads import HeadsTrainer
    from sd2train.preprocess import PaddingCollator
    from sd2train.train import LossLogCallback

    input_ids, labels, _ = labelled_batch()
    dataset = [{"input_ids": ids, "labels": lab} for ids, lab in zip(input_ids, labels)] * 4
    heads = TrainedHeads.for_target(kind, target, 2, "tiny-target", DRAFT_VOCAB)
    args = HeadsTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, max_steps=3,
                                  per_device_train_batch_size=2, learning_rate=1e-3, logging_steps=1, report_to="none",
                                  save_strategy="no")
    trainer = HeadsTrainer(model=heads, args=args, train_dataset=dataset, data_collator=PaddingCollator(0),
                           callbacks=[LossLogCallback()], target=target, draft_index=draft_index_of(DRAFT_VOCAB, 128))
    trainer.train()
    heads.save(tmp_path / "out", trainer.accelerator.get_state_dict(trainer.model))
    log = [json.loads(line) for line in (tmp_path / "out" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert {"loss_head0", "loss_head1"} <= set(log[0]) and "loss_head2" not in log[0]
    loaded = load_draft_heads(tmp_path / "out", target)
    assert loaded.kind == kind and loaded.num_heads == 2 and loaded.draft_vocab == DRAFT_VOCAB
    fresh = TrainedHeads.for_target(kind, target, 2, "tiny-target", DRAFT_VOCAB)
    assert not torch.equal(loaded.out[0].weight, fresh.out[0].weight)  # trained: moved from the start


def test_heads_report_by_hand(target):
    from sd2train.heads_quality import evaluate_heads

    torch.manual_seed(0)
    sequences = [torch.randint(0, 128, (20,)).tolist(), torch.randint(0, 128, (15,)).tolist()]
    heads = fresh_heads(target, "hydra", draft_vocab=DRAFT_VOCAB).eval()
    report = evaluate_heads(heads, target, sequences, [8, 5])
    assert report["positions"] == (20 - 8) + (15 - 5)
    assert len(report["rank_accuracy"]) == 3 and all(len(rates) == 10 for rates in report["rank_accuracy"])
    assert report["top1"] == [rates[0] for rates in report["rank_accuracy"]]
    assert all(0 <= sum(rates) <= 1 for rates in report["rank_accuracy"])
    # By hand, head 1 on the first sequence: row t reads x_t and tokens t+1, t+2, and drafts token
    # t + 3, whose target greedy choice comes from the target's logits at t + 2.
    ids = torch.tensor([sequences[0]])
    with torch.no_grad():
        x = heads.normed(last_layer_states(target, ids))[0]
        greedy = target(ids).logits[0].argmax(-1)
        ranks = []
        for j in range(8, 20):  # the continuation's tokens
            t = j - 3
            order = heads.head_logits(1, x[t][None], ids[:, t + 1:t + 3])[0].argsort(descending=True)
            row = [DRAFT_VOCAB[i] for i in order[:10].tolist()]
            ranks.append(row.index(int(greedy[j - 1])) if int(greedy[j - 1]) in row else None)
    first = evaluate_heads(heads, target, sequences[:1], [8])
    for r in range(10):
        assert first["rank_accuracy"][1][r] == pytest.approx(sum(rank == r for rank in ranks) / 12)
    with pytest.raises(ValueError, match="a prompt of 3 tokens"):
        evaluate_heads(heads, target, [sequences[0]], [3])


def test_heads_saved_with_the_vocabulary_inline_still_load(target, tmp_path):
    """Folders written before the vocabulary was a file (``draft_vocab`` inline in the config)."""
    heads = fresh_heads(target, "medusa", draft_vocab=DRAFT_VOCAB).eval()
    folder = heads.save(tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    config["sd2_heads"]["draft_vocab"] = json.loads((folder / config["sd2_heads"].pop("draft_vocab_file")).read_text())
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "draft_vocab.json").unlink()
    assert load_draft_heads(folder, target).draft_vocab == DRAFT_VOCAB
    config["sd2_heads"]["draft_vocab_file"] = "missing.json"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="names the draft vocabulary .*missing.json, which does not exist"):
        load_draft_heads(folder, target)
