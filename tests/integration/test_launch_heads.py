"""The Medusa and Hydra launch scripts run end to end on CPU (one process, a tiny model with the
default tokenizer, a tiny ShareGPT file), inference loads what they write, and the heads' FSDP
config is accepted by accelerate."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import tiny_llama

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "train" / "scripts"


@pytest.mark.parametrize("kind", ["medusa", "hydra"])
def test_heads_launch_script_runs_end_to_end_on_cpu(tiny_setup, kind, tmp_path):
    from transformers import AutoModelForCausalLM

    from specdec.drafters.heads import load_heads_drafter

    out = tmp_path / kind
    env = {**os.environ, "NPROC": "0", "TARGET": str(tiny_setup / "target"), "DATA": str(tiny_setup / "sharegpt.json"),
           "OUTPUT_DIR": str(out), "MAX_STEPS": "2", "BATCH": "2", "NUM_HEADS": "3", "DRAFT_VOCAB_SIZE": "64",
           "EXTRA_ARGS": "--heldout_fraction 0.3 --exit_quality_prompts 2 --exit_quality_new_tokens 4 --bf16 False"}
    result = subprocess.run([str(SCRIPTS / f"train_{kind}.sh")], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())["sd2_heads"]
    assert config["kind"] == kind and config["num_heads"] == 3 and config["target"] == str(tiny_setup / "target")
    vocab = json.loads((out / config["draft_vocab_file"]).read_text())
    assert 0 < len(vocab) <= 64 and config["head_vocab"] == len(vocab)
    log = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    assert {"loss_head0", "loss_head1", "loss_head2"} <= set(log[0])
    report = json.loads((out / "heads_quality.json").read_text())
    assert report["positions"] > 0 and len(report["rank_accuracy"]) == 3 and len(report["top1"]) == 3
    assert (out / "tokenizer.json").is_file()
    # What inference reads: the heads on their target, the static tree from the measured accuracies.
    target = AutoModelForCausalLM.from_pretrained(tiny_setup / "target")
    drafter = load_heads_drafter(out, target, kind, total_token=8)
    assert drafter.draft.heads.num_heads == 3


def test_heads_fsdp_config_is_valid_for_accelerate_and_shards_every_projection():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from torch import nn

    from sd2train.heads import HeadsTrainingArguments, TrainedHeads

    args = HeadsTrainingArguments(output_dir="unused", fsdp=True, use_cpu=True,
                                  fsdp_config=str(REPO / "train" / "configs" / "fsdp_heads.json"))
    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    assert plugin.fsdp_version == 2 and plugin.state_dict_type.name == "FULL_STATE_DICT"
    heads = TrainedHeads.for_target("hydra", tiny_llama(num_layers=2), 3)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, heads)
    wrapped = [name for name, module in heads.named_modules() if policy(module)]
    assert wrapped == [name for name, module in heads.named_modules() if isinstance(module, nn.Linear)]
    assert {"out.0", "out.2", "fuse.1", "blocks.0.linear"} <= set(wrapped)
