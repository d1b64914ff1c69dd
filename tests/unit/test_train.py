"""The sorted loss and the trainer, on a tiny random Llama."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sd2.draft_spec import validate_exits
from sd2train.exits import all_exit_logits, parse_int_list
from sd2train.loss import IGNORE_INDEX, sorted_loss
from sd2train.train import freeze_first_layers

from helpers import tiny_llama


def batch(vocab=128, seed=1):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab, (2, 12), generator=g)
    labels = input_ids.clone()
    labels[:, :5] = IGNORE_INDEX  # a prompt without loss
    labels[1, 9:] = IGNORE_INDEX  # padding
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0
    return input_ids, labels, attention_mask


def hand_exit_logits(model, input_ids, attention_mask, k):
    """lm_head(norm(h_k)) computed by running the layers by hand, no hooks."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    if k == model.config.num_hidden_layers:
        return out.logits  # the model's own output: norm + head after the last layer
    return model.lm_head(model.model.norm(out.hidden_states[k]))


def shifted_ce(logits, labels):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX)


def test_soft_loss_equals_hand_computation():
    model = tiny_llama(num_layers=4)
    input_ids, labels, mask = batch()
    exits, weights = [1, 3, 4], [1.0, 2.0, 3.0]
    hand = [shifted_ce(hand_exit_logits(model, input_ids, mask, k), labels) for k in exits]
    result = sorted_loss(model, input_ids, labels, mask, exits)
    assert torch.allclose(result.loss, sum(hand) / 3, atol=1e-5)
    for k, h in zip(exits, hand):
        assert result.per_exit[k] == pytest.approx(h.item(), abs=1e-5)
    weighted = sorted_loss(model, input_ids, labels, mask, exits, weights)
    assert torch.allclose(weighted.loss, sum(w * h for w, h in zip(weights, hand)) / 6, atol=1e-5)
    assert result.num_tokens == int((labels[:, 1:] != IGNORE_INDEX).sum())


def test_sft_loss_is_the_models_own_loss():
    model = tiny_llama(num_layers=4)
    input_ids, labels, mask = batch()
    own = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    assert torch.allclose(sorted_loss(model, input_ids, labels, mask, [4]).loss, own, atol=1e-5)


def test_distill_loss_is_kl_to_target_and_zero_against_itself():
    draft, target = tiny_llama(num_layers=2, seed=0), tiny_llama(num_layers=4, seed=3)
    input_ids, labels, mask = batch()
    result = sorted_loss(draft, input_ids, labels, mask, [1, 2], target=target, distill_weight=1.0)
    sel = labels[:, 1:] != IGNORE_INDEX
    p = F.log_softmax(target(input_ids=input_ids, attention_mask=mask).logits[:, :-1][sel], -1)
    expected = []
    for k in (1, 2):
        q = F.log_softmax(hand_exit_logits(draft, input_ids, mask, k)[:, :-1][sel], -1)
        expected.append((p.exp() * (p - q)).sum(-1).mean())
    assert torch.allclose(result.loss, sum(expected) / 2, atol=1e-5)
    self_kl = sorted_loss(target, input_ids, labels, mask, [4], target=target, distill_weight=1.0)
    assert self_kl.loss.item() == pytest.approx(0.0, abs=1e-5)
    mixed = sorted_loss(draft, input_ids, labels, mask, [2], target=target, distill_weight=0.25)
    ce = shifted_ce(hand_exit_logits(draft, input_ids, mask, 2), labels)
    assert torch.allclose(mixed.loss, 0.75 * ce + 0.25 * expected[1], atol=1e-5)


def test_exit_logits_of_hooks_match_hidden_states():
    model = tiny_llama(num_layers=3)
    input_ids, _, mask = batch()
    logits = all_exit_logits(model, [1, 2, 3], input_ids, mask)
    for k in (1, 2, 3):
        assert torch.allclose(logits[k], hand_exit_logits(model, input_ids, mask, k), atol=1e-5)


def test_no_labels_gives_zero_loss_with_graph():
    model = tiny_llama(num_layers=2)
    input_ids, labels, mask = batch()
    result = sorted_loss(model, input_ids, torch.full_like(labels, IGNORE_INDEX), mask, [1, 2])
    assert result.loss.item() == 0.0 and result.loss.requires_grad


def test_twenty_steps_lower_the_soft_loss_on_a_fixed_batch():
    model = tiny_llama(num_layers=4).train()
    input_ids, labels, mask = batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = sorted_loss(model, input_ids, labels, mask, [2, 3, 4]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_frozen_first_layers_stay_equal_to_the_target_while_the_rest_train():
    target = tiny_llama(num_layers=4)
    draft = tiny_llama(num_layers=4).train()
    freeze_first_layers(draft, 2, shallowest_exit=3)
    optimizer = torch.optim.AdamW([p for p in draft.parameters() if p.requires_grad], lr=3e-3)
    input_ids, labels, mask = batch()
    for _ in range(3):
        optimizer.zero_grad()
        sorted_loss(draft, input_ids, labels, mask, [3, 4]).loss.backward()
        optimizer.step()
    for frozen, original in zip(draft.model.layers[:2], target.model.layers[:2]):
        assert all(torch.equal(a, b) for a, b in zip(frozen.parameters(), original.parameters()))
    assert not torch.equal(draft.model.layers[2].mlp.up_proj.weight, target.model.layers[2].mlp.up_proj.weight)
    with pytest.raises(ValueError, match="below the shallowest exit"):
        freeze_first_layers(draft, 3, shallowest_exit=3)


@pytest.mark.parametrize("exits, message", [
    ([2, 5], "deeper than the draft"),
    ([3, 2], "strictly increasing"),
    ([2, 2], "strictly increasing"),
    ([], "at least one exit"),
    ([0, 2], ">= 1"),
])
def test_bad_exits_are_clear_errors(exits, message):
    with pytest.raises(ValueError, match=message):
        validate_exits(exits, 4)


def test_parse_exits():
    assert parse_int_list("6, 9,12") == [6, 9, 12]
    with pytest.raises(ValueError, match="comma-separated integers"):
        parse_int_list("6;9")


def test_bad_weights_and_distill_args():
    model = tiny_llama(num_layers=2)
    input_ids, labels, mask = batch()
    with pytest.raises(ValueError, match="2 exit weights given for 1 exits"):
        sorted_loss(model, input_ids, labels, mask, [2], [1.0, 1.0])
    with pytest.raises(ValueError, match="needs the target"):
        sorted_loss(model, input_ids, labels, mask, [2], distill_weight=0.5)


def test_draft_vocab_loss_uses_only_the_subset():
    draft, target = tiny_llama(num_layers=2, seed=0), tiny_llama(num_layers=4, seed=3)
    input_ids, labels, mask = batch()
    vocab_ids = torch.arange(0, 128, 2)  # even tokens only
    sel = labels[:, 1:] != IGNORE_INDEX
    q = hand_exit_logits(draft, input_ids, mask, 2)[:, :-1][sel][:, vocab_ids]
    p = target(input_ids=input_ids, attention_mask=mask).logits[:, :-1][sel][:, vocab_ids]
    next_tokens = labels[:, 1:][sel]
    kept = next_tokens % 2 == 0  # odd labels are outside the subset: ignored by the CE
    ce = F.cross_entropy(q[kept], next_tokens[kept] // 2)
    kl = F.kl_div(F.log_softmax(q, -1), F.log_softmax(p, -1), log_target=True, reduction="batchmean")
    result = sorted_loss(draft, input_ids, labels, mask, [2], target=target, distill_weight=0.5,
                         vocab_ids=vocab_ids)
    assert torch.allclose(result.loss, 0.5 * ce + 0.5 * kl, atol=1e-5)


def test_time_budget_carries_over_a_resume_inside_the_trainer_state(tmp_path):
    """A real Trainer saves the time spent in the checkpoint's trainer_state.json (the file it
    writes last: no kill between two files can lose it), and a resumed callback continues from it."""
    import json
    from types import SimpleNamespace

    from transformers import Trainer, TrainingArguments

    from sd2train.train import TimeLimitCallback

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            ids = torch.arange(i, i + 6) % 64
            return {"input_ids": ids, "labels": ids}

    budget = TimeLimitCallback(minutes=1)
    budget.spent_before = 40.0  # as if resumed from 40 s of training
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, save_steps=2, per_device_train_batch_size=2,
                             report_to=[], use_cpu=True, logging_steps=1, disable_tqdm=True)
    Trainer(model=tiny_llama(num_layers=1, vocab_size=64), args=args, train_dataset=Rows(),
            callbacks=[budget]).train()
    checkpoint = tmp_path / "checkpoint-2"
    assert not (checkpoint / TimeLimitCallback.LEGACY_STATE_FILE).exists()
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["TimeLimitCallback"]
    assert saved["attributes"]["spent_before"] > 40 and TimeLimitCallback.spent_in(checkpoint) > 40

    state = SimpleNamespace(global_step=2, is_world_process_zero=True)
    resumed_args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=str(checkpoint))
    second = TimeLimitCallback(minutes=1)
    second.on_train_begin(resumed_args, state, None)
    control = SimpleNamespace(should_training_stop=False)
    second.on_step_end(resumed_args, state, control)
    assert second.spent() >= 40 and not control.should_training_stop
    second.started -= 21  # 40 s before + 21 s now > the 60 s budget
    second.on_step_end(resumed_args, state, control)
    assert control.should_training_stop


def test_a_checkpoint_of_an_older_run_gives_its_time_from_train_time_json(tmp_path):
    import json

    from sd2train.train import TimeLimitCallback

    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 3, "stateful_callbacks": {}}))
    assert TimeLimitCallback.spent_in(tmp_path) == 0.0
    (tmp_path / TimeLimitCallback.LEGACY_STATE_FILE).write_text(json.dumps({"seconds": 12.5}))
    assert TimeLimitCallback.spent_in(tmp_path) == 12.5


def test_loss_log_drops_steps_after_the_resumed_checkpoint(tmp_path):
    import json
    from types import SimpleNamespace

    from sd2train.train import LossLogCallback

    log = tmp_path / "loss_log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 14)))
    checkpoint = tmp_path / "checkpoint-10"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 10}))
    args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=str(checkpoint))
    state = SimpleNamespace(is_world_process_zero=True, global_step=10)
    callback = LossLogCallback()
    callback.on_train_begin(args, state, None)
    callback.on_log(args, SimpleNamespace(is_world_process_zero=True, global_step=11), None, logs={"loss": 0.5})
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 12))
