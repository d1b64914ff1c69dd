"""Exit-quality report: agreement with the target's greedy token, confidences, thresholds."""
from __future__ import annotations

import json

import pytest
import torch

from sd2train.agreement import evaluate_exits
from sd2train.thresholds import cascade, choose_thresholds

from helpers import tiny_llama


def test_an_exit_at_the_targets_depth_agrees_everywhere():
    target = tiny_llama(num_layers=4)
    torch.manual_seed(0)
    sequences = [torch.randint(0, 128, (20,)).tolist(), torch.randint(0, 128, (15,)).tolist()]
    report = evaluate_exits(target, target, sequences, [8, 5], [2, 4], vocab_ids=torch.arange(64))
    assert report["positions"] == (20 - 8) + (15 - 5)
    last = report["per_exit"][4]
    assert last["top1_agreement"] == 1.0 and last["mean_top1_prob_wrong"] is None
    assert last["nll_of_target_token"] <= last["cross_entropy_to_target"] + 1e-6  # top-1 is the likeliest
    assert report["per_exit"][2]["top1_agreement"] < 1.0
    assert 0 <= last["top1_agreement_draft_vocab"] <= 1.0
    assert last["top4_recall"] == 1.0
    shallow = report["per_exit"][2]
    # Recall over the 4 best can only add to top-1 agreement, on either head.
    assert shallow["top1_agreement"] <= shallow["top4_recall"] <= 1.0
    assert shallow["top1_agreement_draft_vocab"] <= shallow["top4_recall_draft_vocab"]
    assert report["suggested_thresholds"][-1] == 0.0


def test_thresholds_pick_where_an_early_exit_is_as_good_as_the_last():
    # Exit 6 is right exactly when it is sure (p > 0.6); the last exit is right 70% of the time.
    probs = {6: torch.tensor([0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.65, 0.35, 0.25, 0.15]),
             12: torch.full((10,), 0.5)}
    right = {6: probs[6] > 0.6, 12: torch.tensor([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], dtype=torch.bool)}
    thresholds = choose_thresholds(probs, right)
    # At 0.3 exit 6 is sure of 5 tokens and right on 4, as is exit 12; at 0.25 exit 12 is better.
    assert thresholds == [0.3, 0.0]
    result = cascade(probs, right, thresholds)
    assert result["share_per_exit"] == {6: 0.5, 12: 0.5}
    assert result["agreement"] == pytest.approx((4 + 3) / 10)


def test_report_command_on_the_default_target(tmp_path, default_model_dir):
    from sd2train.exit_quality import main

    out = tmp_path / "report.json"
    main(["--draft", str(default_model_dir), "--layers", "6", "--prompts", "2", "--new-tokens", "6",
          "--output", str(out)])
    report = json.loads(out.read_text())
    assert report["exits"] == [3, 4, 6] and report["prompts"] == 2 and report["positions"] > 0
    assert set(report["per_exit"]) == {"3", "4", "6"}


def test_held_out_prompts_of_a_length_range(default_target):
    from sd2train.report_text import heldout_prompts
    from sd2train.preprocess import get_format

    _, tokenizer = default_target
    fmt = get_format(None, tokenizer)
    long = heldout_prompts(tokenizer, fmt, 3, 1024, min_prompt_tokens=256)
    assert len(long) == 3 and all(256 <= len(p) <= 1024 for p in long)
    assert all(len(p) <= 192 for p in heldout_prompts(tokenizer, fmt, 3, 192))
    with pytest.raises(ValueError, match="no held-out prompt has 5 to 6 tokens"):
        heldout_prompts(tokenizer, fmt, 3, 6, min_prompt_tokens=5)


def test_answer_sequences_follow_the_harness_answers_per_task(default_target, tmp_path):
    from sd2train.report_text import answer_sequences
    from sd2train.preprocess import get_format

    _, tokenizer = default_target
    fmt = get_format(None, tokenizer)
    questions = tmp_path / "question.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "category": "writing", "turns": ["Write a poem.", "More."]})
                         + "\n" + json.dumps({"question_id": 2, "category": "translation", "turns": ["Hallo"]}) + "\n")

    def answer(qid, category, ids, temperature=0.0, **extra):
        return json.dumps({"question_id": qid, "category": category, "settings": {"temperature": temperature},
                           "choices": [{"token_ids": [ids]}], **extra}) + "\n"

    answers = tmp_path / "ar.jsonl"
    answers.write_text(answer(1, "writing", [11, 12, 13]) + answer(2, "translation", [21])
                       + answer(2, "translation", [], error="too long"))
    by_task = answer_sequences(answers, questions, tokenizer, fmt)
    assert set(by_task) == {"mt_bench", "translation"}  # MT-bench's categories are one task; errors left out
    (sequence,), (prompt_len,) = by_task["mt_bench"]
    prompt = tokenizer(fmt.prompt(None, [{"role": "user", "content": "Write a poem."}]),
                       add_special_tokens=False)["input_ids"]
    assert sequence == prompt + [11, 12, 13] and prompt_len == len(prompt)
    answers.write_text(answer(1, "writing", [11], temperature=0.7))
    with pytest.raises(ValueError, match="sampled"):
        answer_sequences(answers, questions, tokenizer, fmt)
    answers.write_text(answer(3, "qa", [11]))
    with pytest.raises(ValueError, match="question 3 is not in"):
        answer_sequences(answers, questions, tokenizer, fmt)


def test_speed_thresholds_weigh_agreement_against_each_exits_cost():
    from sd2train.thresholds import estimated_speedup, speed_thresholds

    # (1 + a + a^2) / (1 + 2c) is the best chain for a = 0.5, c = 0.1: 1.75 / 1.2
    assert estimated_speedup(0.5, 0.1) == (pytest.approx(1.75 / 1.2), 2)
    assert estimated_speedup(0.0, 0.1) == (1.0, 0)  # a draft that never agrees: do not draft
    # Exit 6 agrees on 5 of 10 tokens, exit 12 on 6 of 10 at four times the cost: exit 6 alone wins...
    right = {6: torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=torch.bool),
             12: torch.tensor([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.bool)}
    probs = {6: torch.tensor([0.9] * 5 + [0.2] * 5), 12: torch.full((10,), 0.5)}
    cheap = speed_thresholds(probs, right, {6: 0.05, 12: 0.20})
    assert cheap["estimated_speedup_alone"][6] > cheap["estimated_speedup_alone"][12]
    assert cheap["estimated_speedup"] >= max(cheap["estimated_speedup_alone"].values())
    # ... and when exit 12 costs no more than exit 6, sending the unsure tokens deeper pays.
    level = speed_thresholds(probs, right, {6: 0.05, 12: 0.05})
    assert 0.2 <= level["thresholds"][0] < 0.9 and level["agreement"] == pytest.approx(0.6)


@pytest.fixture(scope="module")
def tiny_draft(tmp_path_factory, default_model_dir):
    """A tiny 2-layer draft (exits 1, 2) and target with the default tokenizer, a ShareGPT file of
    300 short conversations (a few held out), and the draft's own report already written."""
    from helpers import save_tiny_text_target

    root = tmp_path_factory.mktemp("report")
    target = save_tiny_text_target(root / "target", default_model_dir)
    draft = save_tiny_text_target(root / "draft", default_model_dir, seed=1)
    config = json.loads((draft / "config.json").read_text())
    config["sd2"] = {"exits": [1, 2], "thresholds": [0.5, 0.0], "target": str(target)}
    (draft / "config.json").write_text(json.dumps(config))
    records = [{"id": f"c{i}", "conversations": [{"from": "human", "value": f"What comes after {i}?"},
                                                  {"from": "gpt", "value": f"{i + 1} comes after {i}."}]}
               for i in range(300)]
    (root / "sharegpt.json").write_text(json.dumps(records))
    (draft / "exit_quality.json").write_text('{"prompts": 32, "the draft\'s own": true}')
    return draft, root / "sharegpt.json"


def report_cli(*argv):
    import os
    import subprocess
    import sys

    from sd2.paths import REPO_ROOT

    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'train'}"}
    return subprocess.run([sys.executable, "-m", "sd2train.exit_quality", *map(str, argv)], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.parametrize("count", ["0", "-3"])
def test_a_prompt_count_below_one_is_refused(tiny_draft, capsys, count):
    from sd2train.errors import run_cli
    from sd2train.exit_quality import main

    draft, data = tiny_draft
    own = (draft / "exit_quality.json").read_bytes()
    for measured in (["--draft", draft], ["--eagle", draft]):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, [*map(str, measured), "--prompts", count, "--data-path", str(data)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert err == f"error: --prompts must be >= 1 (the number of held-out prompts to measure on), got {count}\n"
    assert (draft / "exit_quality.json").read_bytes() == own and sorted(p.name for p in draft.glob("*quality*")) == \
        ["exit_quality.json"]


def test_a_prompt_count_below_one_is_refused_by_the_real_command_and_the_heads_report(tiny_draft):
    draft, data = tiny_draft
    result = report_cli("--draft", draft, "--prompts", "0", "--data-path", data)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: --prompts must be >= 1 (the number of held-out prompts "
                                                  "to measure on), got 0"]
    from sd2train.errors import run_cli
    from sd2train.heads_quality import main as heads_main

    with pytest.raises(SystemExit) as exit_info:
        run_cli(heads_main, ["--heads", str(draft), "--prompts", "-1"])
    assert exit_info.value.code == 2


def test_another_prompt_count_writes_beside_the_drafts_own_report(tiny_draft, capsys):
    from sd2train.errors import run_cli
    from sd2train.exit_quality import main

    draft, data = tiny_draft
    own = (draft / "exit_quality.json").read_bytes()
    run_cli(main, ["--draft", str(draft), "--prompts", "2", "--new-tokens", "4", "--data-path", str(data)])
    written = draft / "exit_quality-n2.json"
    assert f"report written to {written}" in capsys.readouterr().out
    assert (draft / "exit_quality.json").read_bytes() == own  # the draft's own report is untouched
    report = json.loads(written.read_text())
    assert report["prompts"] == 2 and report["exits"] == [1, 2] and report["positions"] > 0
