"""Fixtures: a tiny random model, and the real default target (tests/integration/ only).

tests/unit/ runs on tiny random models in seconds and needs nothing prepared; tests/integration/
uses the default target that scripts/setup.sh prepares and is skipped, with a message, without it.
Every test under tests/integration/ carries the ``integration`` marker: ``-m "not integration"``
runs the unit tests alone, ``-m "not slow"`` leaves out the long ones.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sd2.paths import DEFAULT_MODEL_DIR

from helpers import tiny_llama

INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if INTEGRATION in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


def pytest_runtest_setup(item):
    if item.get_closest_marker("integration") and not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        pytest.skip(f"the default target is not prepared at {DEFAULT_MODEL_DIR}: run scripts/setup.sh")


@pytest.fixture
def tiny_model():
    return tiny_llama()


@pytest.fixture(scope="session")
def default_model_dir():
    return DEFAULT_MODEL_DIR


@pytest.fixture(scope="session")
def default_target(default_model_dir):
    """(model, tokenizer) of the real default target in float32, loaded once per session."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory, default_model_dir):
    """For the launch scripts: a 4-layer random target with the default tokenizer (``target/``),
    and 40 ShareGPT conversations (``sharegpt.json``)."""
    import json

    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("launch")
    tiny_llama(num_layers=4, vocab_size=49152, hidden=32).save_pretrained(root / "target")
    AutoTokenizer.from_pretrained(default_model_dir).save_pretrained(root / "target")
    records = [{"id": f"conv{i}", "conversations": [
        {"from": "human", "value": f"Tell me about the number {i}."},
        {"from": "gpt", "value": f"The number {i} comes after {i - 1} and before {i + 1}."}]} for i in range(40)]
    (root / "sharegpt.json").write_text(json.dumps(records))
    return root
