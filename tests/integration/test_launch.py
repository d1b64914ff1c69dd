"""Launch scripts run end to end on CPU (one process, a tiny model, a tiny ShareGPT file), and
the shipped FSDP and DeepSpeed configs are accepted by their libraries."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "train" / "scripts"
CONFIGS = REPO / "train" / "configs"


def generate_then_train_env(target, tmp_path, replies, out, **settings) -> dict:
    """Environment for a script that generates 6 tiny replies of 8 tokens and trains a 2-layer draft on them."""
    return {**os.environ, "TARGET": str(target), "DRAFT": str(tmp_path / "init"), "DRAFT_LAYERS": "2",
            "EXITS": "1,2", "DRAFT_VOCAB_SIZE": "64", "REPLIES": str(replies), "OUTPUT_DIR": str(out),
            "GEN_CONVERSATIONS": "6", "BATCH": "2", "GEN_ARGS": "--heldout-fraction 0.3 --max-new-tokens 8",
            **settings}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["soft", "sft"])
def test_launch_script_runs_end_to_end_on_cpu(tiny_setup, mode, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / f"draft-{mode}"
    env = {**os.environ, "NPROC": "0", "TARGET": str(tiny_setup / "target"), "DRAFT": str(tmp_path / "init"),
           "DRAFT_LAYERS": "2", "EXITS": "1,2", "DATA": str(tiny_setup / "sharegpt.json"),
           "OUTPUT_DIR": str(out), "MAX_STEPS": "2", "BATCH": "2", "DRAFT_VOCAB_SIZE": "64",
           "EXTRA_ARGS": "--heldout_fraction 0.3 --exit_quality_prompts 2 --exit_quality_new_tokens 3 "
                         "--bf16 False"}
    result = subprocess.run([str(SCRIPTS / f"train_draft_{mode}.sh")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["sd2"]["exits"] == [1, 2]
    assert len(config["sd2"]["thresholds"]) == 2 and config["sd2"]["thresholds"][-1] == 0.0
    assert (out / "draft_vocab.json").is_file()
    report = json.loads((out / "exit_quality.json").read_text())
    assert set(report["per_exit"]) == {"1", "2"} and report["positions"] > 0
    log = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    if mode == "soft":
        assert {"loss_exit1", "loss_exit2"} <= set(log[0])
    else:
        assert "loss_exit2" in log[0] and "loss_exit1" not in log[0]
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 2


@pytest.mark.slow
def test_long_cpu_preset_generates_replies_trains_on_them_and_resumes(tiny_setup, tmp_path, default_model_dir):
    from helpers import save_tiny_text_target

    target = save_tiny_text_target(tmp_path / "target", default_model_dir, num_layers=4)
    out, replies = tmp_path / "draft", tmp_path / "replies.jsonl"
    env = generate_then_train_env(target, tmp_path, replies, out, PROMPTS=str(tiny_setup / "sharegpt.json"),
                                  STEPS="2", TRAIN_ARGS="--heldout_fraction 0.3 --exit_quality_prompts 2 "
                                                        "--exit_quality_new_tokens 3 --bf16 False")
    script = SCRIPTS / "train_draft_soft_long_cpu.sh"
    result = subprocess.run([str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(replies.read_text().splitlines()) == 6 and (out / "replies.done").is_file()
    log = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    assert {"loss_exit1", "loss_exit2"} <= set(log[0])
    report = json.loads((out / "exit_quality.json").read_text())
    assert report["positions"] > 0 and "top4_recall" in report["per_exit"]["2"]
    assert not list(out.glob("checkpoint-*"))
    again = subprocess.run([str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "nothing to do" in again.stdout


@pytest.mark.slow
def test_target_replies_are_generated_before_training_where_asked(tiny_setup, tmp_path, default_model_dir):
    """TARGET_REPLIES=1 (the default with GPUs): the target answers DATA's prompts first and the
    draft trains on those replies; a rerun reuses them."""
    from helpers import save_tiny_text_target

    target = save_tiny_text_target(tmp_path / "target", default_model_dir, num_layers=4)
    out, replies = tmp_path / "draft", tmp_path / "replies.jsonl"
    env = generate_then_train_env(target, tmp_path, replies, out, NPROC="0", TARGET_REPLIES="1",
                                  DATA=str(tiny_setup / "sharegpt.json"), MAX_STEPS="1",
                                  EXTRA_ARGS="--heldout_fraction 0.3 --exit_quality_prompts 0 --bf16 False")
    script = SCRIPTS / "train_draft_soft.sh"
    result = subprocess.run([str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "replies.done").read_text().strip() == str(replies)
    written = [json.loads(line) for line in replies.read_text().splitlines()]
    assert len(written) == 6 and all(r["conversations"][0]["from"] == "human" for r in written)
    assert json.loads((out / "config.json").read_text())["sd2"]["exits"] == [1, 2]
    assert f"6 conversations from 6 records of {replies}" in result.stdout  # the trainer read the replies
    again = subprocess.run([str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(replies.read_text().splitlines()) == 6  # generation skipped, replies reused


@pytest.mark.slow
def test_eagle_script_generates_replies_trains_a_head_and_measures_it(tiny_setup, tmp_path, default_model_dir):
    from helpers import save_tiny_text_target

    target = save_tiny_text_target(tmp_path / "target", default_model_dir, num_layers=2)
    out, replies = tmp_path / "head", tmp_path / "replies.jsonl"
    env = {**os.environ, "NPROC": "0", "TARGET": str(target), "PROMPTS": str(tiny_setup / "sharegpt.json"),
           "REPLIES": str(replies), "OUTPUT_DIR": str(out), "GEN_CONVERSATIONS": "6", "MAX_STEPS": "2", "BATCH": "2",
           "GEN_ARGS": "--heldout-fraction 0.3 --max-new-tokens 8",
           "EXTRA_ARGS": "--heldout_fraction 0.3 --exit_quality_prompts 2 --exit_quality_new_tokens 3 --bf16 False "
                         "--draft_vocab_size 300"}
    result = subprocess.run([str(SCRIPTS / "train_eagle.sh")], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(replies.read_text().splitlines()) == 6 and (out / "replies.done").is_file()
    log = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    assert {"loss_feature", "loss_token", "target_forward_share"} <= set(log[0])
    report = json.loads((out / "eagle_quality.json").read_text())
    assert report["positions"] > 0 and 0 <= report["top1_agreement"] <= report["top4_recall"] <= 1
    # At most 300 ids: a few tiny replies hold fewer distinct tokens.
    assert report["draft_vocab_size"] == len(json.loads((out / "draft_vocab.json").read_text())) <= 300
    assert (out / "tokenizer.json").is_file()
    # The folder loads with sd2.eagle_head alone: no training code imported.
    check = ("import sys, torch; from transformers import AutoModelForCausalLM; from sd2.eagle_head import "
             f"load_eagle_head; target = AutoModelForCausalLM.from_pretrained({str(target)!r}); "
             f"head = load_eagle_head({str(out)!r}, target); assert head.signature['target'] == {str(target)!r}; "
             "assert not [m for m in sys.modules if m.startswith('sd2train')]")
    loaded = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]


@pytest.mark.slow
def test_eagle3_script_trains_a_head_from_its_recipe_and_measures_it(tiny_setup, tmp_path, default_model_dir):
    """train_eagle3.sh on the CPU: its recipe (eagle3_cpu) with the environment's overrides, the
    target's replies generated first, a head that the report measures."""
    from helpers import save_tiny_text_target

    target = save_tiny_text_target(tmp_path / "target", default_model_dir, num_layers=4)
    out, replies = tmp_path / "head3", tmp_path / "replies.jsonl"
    env = {**os.environ, "NPROC": "0", "TARGET": str(target), "PROMPTS": str(tiny_setup / "sharegpt.json"),
           "REPLIES": str(replies), "OUTPUT_DIR": str(out), "GEN_CONVERSATIONS": "6", "MAX_STEPS": "2", "BATCH": "2",
           "TTT_STEPS": "2", "DRAFT_VOCAB_SIZE": "300", "BF16": "False", "FEATURE_LAYERS": "1,2,3",
           "GEN_ARGS": "--heldout-fraction 0.3 --max-new-tokens 8",
           "EXTRA_ARGS": "--heldout_fraction 0.3 --exit_quality_prompts 2 --exit_quality_new_tokens 3"}
    result = subprocess.run([str(SCRIPTS / "train_eagle3.sh")], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[eagle3, 2 unrolled steps each] 2 steps in " in result.stdout
    log = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    assert log[0]["learning_rate"] <= 1e-3  # the recipe's lr (cosine from 1e-3)
    report = json.loads((out / "eagle_quality.json").read_text())
    assert report["positions"] > 0 and len(json.loads((out / "draft_vocab.json").read_text())) <= 300


def test_eagle_training_refuses_deepspeed_zero3():
    from sd2train.eagle import EagleTrainingArguments, check_arguments

    zero2 = EagleTrainingArguments(output_dir="unused", use_cpu=True, deepspeed=str(CONFIGS / "zero2.json"))
    check_arguments(zero2)
    zero3 = EagleTrainingArguments(output_dir="unused", use_cpu=True, deepspeed=str(CONFIGS / "zero3.json"))
    with pytest.raises(ValueError, match="ZeRO-3 is not supported for the EAGLE head"):
        check_arguments(zero3)


def test_fsdp_config_is_valid_for_accelerate():
    from accelerate.utils import FullyShardedDataParallelPlugin

    from sd2train.train import SortedTrainingArguments

    args = SortedTrainingArguments(output_dir="unused", fsdp=True, fsdp_config=str(CONFIGS / "fsdp.json"), use_cpu=True)
    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)  # what the Trainer hands accelerate
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # full_shard
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]  # auto_wrap on the decoder layer
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"


@pytest.mark.parametrize("name, stage", [("zero2.json", 2), ("zero3.json", 3)])
def test_deepspeed_configs_are_valid_for_deepspeed(name, stage):
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from sd2train.train import SortedTrainingArguments

    config = json.loads((CONFIGS / name).read_text())
    zero = DeepSpeedZeroConfig(**config["zero_optimization"])  # pydantic: rejects unknown keys
    assert int(zero.stage) == stage
    args = SortedTrainingArguments(output_dir="unused", use_cpu=True, per_device_train_batch_size=2,
                                   gradient_accumulation_steps=16, bf16=True)
    hf_config = HfTrainerDeepSpeedConfig(str(CONFIGS / name))
    hf_config.trainer_config_process(args)  # fills every "auto" from the training arguments
    assert hf_config.config["train_micro_batch_size_per_gpu"] == 2
    assert hf_config.config["gradient_accumulation_steps"] == 16 and hf_config.config["bf16"]["enabled"] is True
    assert hf_config.is_zero3() == (stage == 3)
