"""The EAGLE head's training: features, loss, save/load and the target check, on tiny random Llamas."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sd2.eagle_head import EagleHead, load_eagle_head
from sd2train.eagle import check_arguments, eagle_loss, feature_noise
from sd2train.exits import last_layer_states
from sd2train.preprocess import IGNORE_INDEX

from helpers import hook_features_checked, labelled_batch, tiny_llama


@pytest.fixture
def target():
    return tiny_llama(num_layers=3)


@pytest.fixture
def head(target):
    head = EagleHead.for_target(target, "tiny-target")
    with torch.no_grad():  # away from its start (a copy of the last layer, the fuse a pass-through)
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return head


def hand_smooth_l1(a, b):
    d = (a - b).abs()
    return torch.where(d < 1, 0.5 * d ** 2, d - 0.5).mean()


def test_head_shapes(target, head):
    input_ids, _, mask = labelled_batch()
    features = last_layer_states(target, input_ids, mask)
    assert features.shape == (2, 12, 64)
    predicted = head(input_ids[:, 1:], features[:, :-1])
    assert predicted.shape == (2, 11, 64)
    assert head.logits(predicted).shape == (2, 11, 128)
    assert head.fuse(input_ids[:, 1:], features[:, :-1]).shape == (2, 11, 64)
    # Only the fuse and the layer are the head's own; the target's embedding, norm and head are not.
    own = {name.split(".")[0] for name, _ in head.named_parameters()}
    assert own == {"fc", "layer"}


def test_a_fresh_head_starts_from_the_targets_last_layer(target):
    head = EagleHead.for_target(target)
    for (name, mine), theirs in zip(head.layer.state_dict().items(), target.model.layers[-1].state_dict().values()):
        assert torch.equal(mine, theirs), name
    features = torch.randn(1, 5, 64)
    assert torch.allclose(head.fuse(torch.arange(5)[None], features), features)  # [0 | I]: the feature itself


def test_hook_features_are_the_runners_last_layer_output_before_the_norm(target):
    ids = labelled_batch()[0][0]
    features = hook_features_checked(target, ids)
    # Before the norm: the target's own norm and head over them give the target's logits.
    head = EagleHead.for_target(target)
    assert torch.allclose(head.logits(features), target(ids[None]).logits, atol=1e-5)


def test_the_loss_equals_a_hand_computation(target, head):
    input_ids, labels, mask = labelled_batch()
    features = last_layer_states(target, input_ids, mask)
    result = eagle_loss(head, features, input_ids, labels, mask, feature_weight=1.0, token_weight=0.1)

    counted = labels[:, 2:] != IGNORE_INDEX  # row t predicts token t+2
    predicted = head(input_ids[:, 1:-1], features[:, :-2])[counted]
    true_next = features[:, 1:-1][counted]
    feature_part = hand_smooth_l1(predicted, true_next)
    p = F.softmax(target.lm_head(target.model.norm(true_next)), -1)
    log_q = F.log_softmax(target.lm_head(target.model.norm(predicted)), -1)
    token_part = -(p * log_q).sum(-1).mean()
    assert result.num_rows == int(counted.sum()) == 8 + 5
    assert result.feature_loss == pytest.approx(feature_part.item(), rel=1e-5)
    assert result.token_loss == pytest.approx(token_part.item(), rel=1e-5)
    assert torch.allclose(result.loss, feature_part + 0.1 * token_part, rtol=1e-5)
    weighted = eagle_loss(head, features, input_ids, labels, mask, feature_weight=0.5, token_weight=2.0)
    assert torch.allclose(weighted.loss, 0.5 * feature_part + 2.0 * token_part, rtol=1e-5)


class Oracle(nn.Module):
    """Predicts the true next features whatever it reads; logits are the real head's."""

    def __init__(self, head, true_next):
        super().__init__()
        self.head, self.true_next = head, true_next
        self.weight = nn.Parameter(torch.zeros(()))  # something for the loss's graph to reach

    def forward(self, next_ids, features):
        return self.true_next + self.weight

    def logits(self, features):
        return self.head.logits(features)


def test_the_feature_part_is_zero_and_the_token_part_the_targets_entropy_for_true_features(target, head):
    input_ids, labels, mask = labelled_batch()
    features = last_layer_states(target, input_ids, mask)
    result = eagle_loss(Oracle(head, features[:, 1:-1]), features, input_ids, labels, mask)
    assert result.feature_loss == 0.0
    p = F.log_softmax(target.lm_head(target.model.norm(features[:, 1:-1][labels[:, 2:] != IGNORE_INDEX])), -1)
    entropy = -(p.exp() * p).sum(-1).mean()
    assert result.token_loss == pytest.approx(entropy.item(), rel=1e-5)


def test_only_rows_predicting_an_assistant_token_count(target, head):
    input_ids, labels, mask = labelled_batch()
    features = last_layer_states(target, input_ids, mask)
    base = eagle_loss(head, features, input_ids, labels, mask)
    # Labels 0 and 1 are never a row's predicted token; the features there only feed later rows.
    relabelled = labels.clone()
    relabelled[:, :2] = 7
    assert eagle_loss(head, features, input_ids, relabelled, mask).loss.item() == base.loss.item()
    one_more = labels.clone()
    one_more[0, 3] = input_ids[0, 3]  # row 1 now counts
    wider = eagle_loss(head, features, input_ids, one_more, mask)
    assert wider.num_rows == base.num_rows + 1 and wider.loss.item() != base.loss.item()
    # The true features of rows that do not count do not enter the loss.
    changed = features.clone()
    changed[1, 10:] += 100.0  # padding: f_10 is only row 9's target, which does not count
    assert torch.allclose(eagle_loss(head, changed, input_ids, labels, mask).loss, base.loss)
    nothing = eagle_loss(head, features, input_ids, torch.full_like(labels, IGNORE_INDEX), mask)
    assert nothing.loss.item() == 0.0 and nothing.loss.requires_grad and nothing.num_rows == 0


def test_eagles_uniform_noise_scales_with_the_sequence_length():
    torch.manual_seed(0)
    features = torch.zeros(2, 50, 64)
    noise = feature_noise(features, torch.tensor([256, 512]), std=0.2)
    assert noise.abs()[0].max() <= 0.2 * 512 / 256 / 2 and noise.abs()[0].max() > 0.19
    assert noise.abs()[1].max() <= 0.2 / 2 and noise.abs()[1].max() > 0.09
    assert abs(noise.mean()) < 0.01


def test_noise_goes_on_the_input_features_only(target, head):
    input_ids, labels, mask = labelled_batch()
    features = last_layer_states(target, input_ids, mask)
    clean = eagle_loss(head, features, input_ids, labels, mask)
    torch.manual_seed(0)
    noisy = eagle_loss(head, features, input_ids, labels, mask, noise=0.2)
    assert noisy.loss.item() != clean.loss.item()
    # An oracle predicts the clean targets whatever its (noisy) inputs: nothing to regress.
    assert eagle_loss(Oracle(head, features[:, 1:-1]), features, input_ids, labels, mask, noise=0.2).feature_loss == 0.0


def test_save_and_load_give_the_same_head(target, head, tmp_path):
    from safetensors.torch import load_file

    input_ids, _, mask = labelled_batch()
    features = last_layer_states(target, input_ids, mask)
    head.save(tmp_path / "head")
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    assert config["sd2_eagle"]["target"] == "tiny-target" and config["num_hidden_layers"] == 1
    assert {k.split(".")[0] for k in load_file(tmp_path / "head" / "model.safetensors")} == {"fc", "layer"}
    loaded = load_eagle_head(tmp_path / "head", target)
    head.eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids[:, 1:], features[:, :-1]), head(input_ids[:, 1:], features[:, :-1]))
    # Weights handed in (as a sharded run gathers them) replace the head's own.
    other = {k: torch.zeros_like(v) for k, v in head.state_dict().items()}
    head.save(tmp_path / "zeros", other)
    assert all((v == 0).all() for v in load_file(tmp_path / "zeros" / "model.safetensors").values())


@pytest.mark.parametrize("other, message", [
    (dict(hidden=32), "hidden_size=64, this target has 32"),
    (dict(vocab_size=256), "vocab_size=128, this target has 256"),
    (dict(num_layers=4), "num_hidden_layers=3, this target has 4"),
    (dict(seed=1), "trained for another target .*embedding weights differ"),
])
def test_a_head_for_another_target_is_refused(head, tmp_path, other, message):
    head.save(tmp_path / "head")
    with pytest.raises(ValueError, match=message):
        load_eagle_head(tmp_path / "head", tiny_llama(**{"num_layers": 3, **other}))


def test_a_folder_that_is_not_a_head_is_refused(tmp_path, target):
    with pytest.raises(ValueError, match="config.json missing"):
        load_eagle_head(tmp_path, target)
    target.save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match="not an EAGLE head"):
        load_eagle_head(tmp_path / "model", target)


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    # A larger init than tiny_llama's: features of some size and a peaked next-token distribution
    # (at 0.02 the target is near uniform, its entropy already the token part's floor).
    target = tiny_llama(num_layers=3, initializer_range=0.3).requires_grad_(False)
    head = EagleHead.for_target(target).train()
    input_ids, labels, mask = labelled_batch()
    features = last_layer_states(target, input_ids, mask)
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    results = []
    for _ in range(20):
        result = eagle_loss(head, features, input_ids, labels, mask)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        results.append(result)
    first, last = results[0], results[-1]
    assert last.loss.item() < 0.5 * first.loss.item(), [r.loss.item() for r in results]
    assert last.feature_loss < first.feature_loss and last.token_loss < first.token_loss
    assert all(p.grad is None for p in target.parameters())  # the target stays frozen


@pytest.mark.parametrize("settings, message", [
    (dict(feature_weight=-1.0), "must be >= 0 with a positive sum"),
    (dict(feature_weight=0.0, token_weight=0.0), "must be >= 0 with a positive sum"),
    (dict(feature_noise=-0.1), "--feature_noise must be >= 0"),
    (dict(gradient_checkpointing=True), "nothing to checkpoint"),
])
def test_bad_training_arguments_are_clear_errors(settings, message, tmp_path):
    from sd2train.eagle import EagleTrainingArguments

    args = EagleTrainingArguments(output_dir=str(tmp_path), use_cpu=True, **settings)
    with pytest.raises(ValueError, match=message):
        check_arguments(args)


def test_eagle_report_refuses_the_draft_only_flags(capsys):
    from sd2train.exit_quality import main

    with pytest.raises(SystemExit):
        main(["--eagle", "some/head", "--exits", "6,9"])
    assert "--exits: for a draft's exits, not with --eagle" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--eagle", "some/head", "--draft", "some/draft"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_eagle_report_on_teacher_forced_sequences(target):
    from sd2train.agreement import evaluate_eagle

    torch.manual_seed(0)
    sequences = [torch.randint(0, 128, (20,)).tolist(), torch.randint(0, 128, (15,)).tolist()]
    head = EagleHead.for_target(target).eval()
    report = evaluate_eagle(head, target, sequences, [8, 5], vocab_ids=torch.arange(64))
    assert report["positions"] == (20 - 8) + (15 - 5)
    assert 0 <= report["top1_agreement"] <= report["top4_recall"] <= 1
    assert 0 <= report["top1_agreement_draft_vocab"] <= report["top4_recall_draft_vocab"] <= 1
    # The measured rank accuracies are top-4 recall's parts: the target's token as the 1st .. 4th choice.
    for key in ("", "_draft_vocab"):
        ranks = report[f"rank_accuracy{key}"]
        assert len(ranks) == 4 and ranks[0] == pytest.approx(report[f"top1_agreement{key}"])
        assert sum(ranks) == pytest.approx(report[f"top4_recall{key}"])
    # By hand for the first sequence: row p-1 (x_p, f_{p-1}) against the target's greedy token after p.
    ids = torch.tensor([sequences[0]])
    with torch.no_grad():
        features = last_layer_states(target, ids)
        mine = head.logits(head(ids[:, 1:], features[:, :-1]))[0, 6:18].argmax(-1)
        theirs = target(ids).logits[0, 7:19].argmax(-1)
    first = evaluate_eagle(head, target, sequences[:1], [8])
    assert first["top1_agreement"] == pytest.approx(float((mine == theirs).float().mean()))


def test_the_static_tree_is_built_from_the_reports_measured_rank_accuracies(target, head, tmp_path):
    from sd2train.agreement import evaluate_eagle
    from specdec.drafters.eagle import FALLBACK_RANK_ACCURACY, load_eagle_drafter
    from specdec.tree.static import static_tree_choices

    torch.manual_seed(0)
    sequences = [torch.randint(0, 128, (20,)).tolist(), torch.randint(0, 128, (15,)).tolist()]
    head.eval()
    report = evaluate_eagle(head, target, sequences, [8, 5], vocab_ids=torch.arange(64))
    head.save(tmp_path / "head")
    (tmp_path / "head" / "draft_vocab.json").write_text(json.dumps(list(range(64))))
    (tmp_path / "head" / "eagle_quality.json").write_text(json.dumps(report))

    def tree(**kw):
        drafter = load_eagle_drafter(tmp_path / "head", target, tree="static", total_token=12, depth=3, **kw)
        return drafter.proposer.choices

    def built_from(ranks):
        return static_tree_choices([max(a, 1e-4) for a in ranks], 11, 3)

    # The reduced head is scored, so its ranks shape the tree; with the whole vocabulary, the full head's.
    assert tree() == built_from(report["rank_accuracy_draft_vocab"])
    assert tree(draft_vocab_size=0) == built_from(report["rank_accuracy"])
    # Planted rates that make a flat tree, whatever a random head measures: the report is what is read.
    flat = [0.2, 0.2, 0.2, 0.2]
    (tmp_path / "head" / "eagle_quality.json").write_text(json.dumps({**report, "rank_accuracy_draft_vocab": flat}))
    assert tree() == built_from(flat) and max(len(path) for path in tree()) == 2
    # A report written before rank accuracies were measured: the fallback rates, not ones made up from top-1/top-4.
    old = {k: v for k, v in report.items() if not k.startswith("rank_accuracy")}
    (tmp_path / "head" / "eagle_quality.json").write_text(json.dumps(old))
    assert tree() == built_from(FALLBACK_RANK_ACCURACY)
