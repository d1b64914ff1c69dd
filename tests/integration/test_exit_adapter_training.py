"""Training exit adapters (``sd2train.train --exit_adapters``) as a real process on a tiny target:
only the adapters change, they are saved beside a plain checkpoint, and the exit report reads them."""
from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from sd2.exit_adapters import ADAPTERS_FILE


def run(*args, cwd):
    done = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    return done


def test_exit_adapters_train_alone_save_apart_and_are_measured(tiny_setup, tmp_path):
    target, data = tiny_setup / "target", tiny_setup / "sharegpt.json"
    init, out = tmp_path / "init", tmp_path / "adapted"
    made = run("sd2train.make_draft", "--target", str(target), "--layers", "3", "--exits", "1,3", "--output",
               str(init), "--draft-vocab-size", "64", "--data-path", str(data), cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    train = ["sd2train.train", "--model_name_or_path", str(init), "--output_dir", str(out), "--data_path", str(data),
             "--soft", "True", "--submodels", "1,3", "--exit_adapters", "True", "--max_steps", "3",
             "--per_device_train_batch_size", "2", "--learning_rate", "1e-2", "--use_cpu", "True",
             "--heldout_fraction", "0.3", "--exit_quality_prompts", "2", "--exit_quality_new_tokens", "3",
             "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1"]
    trained = run(*train, cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]

    config = json.loads((out / "config.json").read_text())
    assert config["sd2"]["exit_adapters"] is True and config["sd2"]["exits"] == [1, 3]
    weights, before = load_file(str(out / "model.safetensors")), load_file(str(init / "model.safetensors"))
    assert not any("exit_adapters" in name for name in weights)  # a plain checkpoint of the draft's layers
    assert set(weights) == set(before) and all(torch.equal(weights[n], before[n]) for n in before)  # frozen
    adapters = load_file(str(out / ADAPTERS_FILE))
    assert {name.split(".")[0] for name in adapters} == {"1", "3"}
    last = load_file(str(target / "model.safetensors"))
    start = {name[len("model.layers.3."):]: t for name, t in last.items() if name.startswith("model.layers.3.")}
    assert any(not torch.equal(adapters[f"1.{name}"], t) for name, t in start.items())  # trained from the last layer
    report = json.loads((out / "exit_quality.json").read_text())
    assert set(report["per_exit"]) == {"1", "3"} and report["positions"] > 0

    again = run("sd2train.train", "--model_name_or_path", str(out), "--output_dir", str(tmp_path / "again"),
                "--data_path", str(data), "--soft", "True", "--submodels", "1,2", "--max_steps", "1",
                "--use_cpu", "True", "--report_to", "none", cwd=tmp_path)
    assert again.returncode == 2 and "exit adapters for exits [1, 3] only; it cannot exit at [2]" in again.stderr, again.stderr[-2000:]
