"""make_draft: the first N layers of a target as a loadable HF checkpoint with config.sd2."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from sd2.draft_spec import DRAFT_VOCAB_FILE
from sd2.paths import REPO_ROOT
from sd2train.exits import all_exit_logits
from sd2train.make_draft import draft_vocab, make_draft, truncate_to_first_layers

from helpers import tiny_llama


@pytest.fixture
def saved_target(tmp_path, default_model_dir):
    """A tiny random Llama target (6 layers) saved with the default target's tokenizer."""
    from transformers import AutoTokenizer

    model = tiny_llama(num_layers=6, vocab_size=49152, hidden=32)
    model.save_pretrained(tmp_path / "target")
    AutoTokenizer.from_pretrained(default_model_dir).save_pretrained(tmp_path / "target")
    return tmp_path / "target", model


def test_draft_last_exit_is_target_logit_lens_and_loads(saved_target, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    target_dir, target = saved_target
    out = make_draft(target_dir, 4, tmp_path / "draft", exits=[2, 3, 4], draft_vocab_size=0)
    draft = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert draft.config.num_hidden_layers == 4 and len(draft.model.layers) == 4
    assert draft.lm_head.weight.data_ptr() == draft.model.embed_tokens.weight.data_ptr()  # still tied
    sd2 = AutoConfig.from_pretrained(out).sd2
    assert sd2 == {"exits": [2, 3, 4], "thresholds": [0.5, 0.5, 0.0], "target": str(target_dir),
                   "target_num_hidden_layers": 6, "draft_vocab_file": None}
    input_ids = torch.randint(0, 49152, (1, 10))
    with torch.no_grad():
        hidden = target(input_ids=input_ids, output_hidden_states=True).hidden_states[4]
        lens = target.lm_head(target.model.norm(hidden))  # the target's logit lens at layer 4
        assert torch.allclose(draft(input_ids=input_ids).logits, lens, atol=1e-5)
        # Every exit of the draft is the target's logit lens at that depth.
        target_exits = all_exit_logits(target, [2, 3, 4], input_ids)
        for k, logits in all_exit_logits(draft, [2, 3, 4], input_ids).items():
            assert torch.allclose(logits, target_exits[k], atol=1e-5)


def test_draft_vocab_counts_assistant_text_with_specials_first(saved_target, tmp_path):
    from transformers import AutoTokenizer

    target_dir, _ = saved_target
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    convs = [{"id": "a", "messages": [{"role": "user", "content": "zebra zebra zebra zebra"},
                                      {"role": "assistant", "content": "yes yes yes no"}]}]
    vocab = draft_vocab(tokenizer, convs, 5, always=[2, 0])
    yes, no = tokenizer("yes", add_special_tokens=False)["input_ids"][0], tokenizer(" no", add_special_tokens=False)["input_ids"][0]
    assert vocab[:2] == [2, 0] and vocab[2] in (yes, tokenizer(" yes", add_special_tokens=False)["input_ids"][0])
    assert no in vocab and tokenizer("zebra", add_special_tokens=False)["input_ids"][0] not in vocab
    assert len(vocab) <= 5 and len(set(vocab)) == len(vocab)


def test_make_draft_writes_the_vocab_file(saved_target, tmp_path):
    target_dir, _ = saved_target
    data = tmp_path / "sharegpt.json"
    data.write_text(json.dumps([{"id": f"c{i}", "conversations": [
        {"from": "human", "value": "hello"}, {"from": "gpt", "value": f"answer number {i}"}]} for i in range(20)]))
    out = make_draft(target_dir, 3, tmp_path / "draft", draft_vocab_size=16, data_path=data)
    config = json.loads((out / "config.json").read_text())
    assert config["sd2"]["exits"] == [1, 2, 3] and config["sd2"]["draft_vocab_file"] == DRAFT_VOCAB_FILE
    vocab = json.loads((out / DRAFT_VOCAB_FILE).read_text())
    assert len(vocab) == 16 and set(vocab[:3]) == {0, 1, 2}  # special tokens first


@pytest.mark.parametrize("layers", [0, 6, 7])
def test_bad_depth_is_a_clear_error(layers):
    with pytest.raises(ValueError, match="1 <= N < the target's depth"):
        truncate_to_first_layers(tiny_llama(num_layers=6), layers)


def test_exits_must_fit_and_end_at_the_draft(saved_target, tmp_path):
    target_dir, _ = saved_target
    with pytest.raises(ValueError, match="deeper than the draft"):
        make_draft(target_dir, 3, tmp_path / "d", exits=[2, 4], draft_vocab_size=0)
    with pytest.raises(ValueError, match="strictly increasing"):
        make_draft(target_dir, 3, tmp_path / "d", exits=[2, 2, 3], draft_vocab_size=0)
    with pytest.raises(ValueError, match="last exit must be the draft's last layer"):
        make_draft(target_dir, 3, tmp_path / "d", exits=[1, 2], draft_vocab_size=0)


def test_unsupported_architecture_is_a_clear_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match="not supported"):
        truncate_to_first_layers(model, 1)


def test_the_exit_report_measures_a_smaller_draft_vocabulary(saved_target, tmp_path):
    from sd2train.exit_quality import exit_quality

    target_dir, _ = saved_target
    data = tmp_path / "sharegpt.json"
    data.write_text(json.dumps([{"id": f"c{i}", "conversations": [
        {"from": "human", "value": f"say {i}"}, {"from": "gpt", "value": f"answer number {i} of many"}]}
        for i in range(200)]))
    out = make_draft(target_dir, 3, tmp_path / "draft", draft_vocab_size=16, data_path=data)
    small = exit_quality(out, num_prompts=2, new_tokens=4, data_path=data, draft_vocab_size=8)
    assert small["draft_vocab_size"] == 8 and (out / "exit_quality-vocab-8.json").is_file()
    assert not (out / "exit_quality.json").exists()  # the standard report is left alone
    full = exit_quality(out, num_prompts=2, new_tokens=4, data_path=data)
    assert full["draft_vocab_size"] == 16 and small["positions"] == full["positions"]
    with pytest.raises(ValueError, match="--draft-vocab-size 17: .* a draft vocabulary of 16"):
        exit_quality(out, num_prompts=2, new_tokens=4, data_path=data, draft_vocab_size=17)


def make_draft_cli(*args):
    return subprocess.run([sys.executable, "-m", "sd2train.make_draft", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


def test_an_existing_draft_is_refused_unless_overwrite_which_clears_its_reports(saved_target, tmp_path):
    saved_target = saved_target[0]
    out = tmp_path / "draft"
    make_draft(saved_target, 2, out, draft_vocab_size=0)
    (out / "exit_quality.json").write_text("{}")
    (out / "replies.done").write_text("data/replies.jsonl\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    done = make_draft_cli("--target", saved_target, "--layers", 1, "--output", out, "--draft-vocab-size", 0)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip() == f"error: --output {out} is not empty (a trained draft?): choose another " \
        "folder, or pass --overwrite to replace the draft and remove its reports"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    done = make_draft_cli("--target", saved_target, "--layers", 1, "--output", out, "--draft-vocab-size", 0,
                          "--overwrite")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / "exit_quality.json").exists() and not (out / "replies.done").exists()
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1


def test_a_negative_draft_vocab_size_is_refused(saved_target, tmp_path):
    saved_target = saved_target[0]
    done = make_draft_cli("--target", saved_target, "--layers", 1, "--output", tmp_path / "d",
                          "--draft-vocab-size", -5)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip() == "error: --draft-vocab-size must be >= 0 (0 = no reduced vocabulary), got -5"
    assert not (tmp_path / "d").exists()
