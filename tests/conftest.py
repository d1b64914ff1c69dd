"""Shared fixtures: a tiny random Llama built in a few lines, and the real default target."""
from __future__ import annotations

import pytest
import torch

from sd2train.assets import DEFAULT_MODEL_DIR


def tiny_llama(num_layers: int = 4, vocab_size: int = 128, hidden: int = 64, seed: int = 0, **overrides):
    """A random LlamaForCausalLM small enough for unit tests (float32, eval mode)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=True, **overrides,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def tiny_model():
    return tiny_llama()


@pytest.fixture(scope="session")
def default_model_dir():
    if not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        pytest.fail(f"{DEFAULT_MODEL_DIR} is missing: run scripts/setup.sh first")
    return DEFAULT_MODEL_DIR


@pytest.fixture(scope="session")
def default_target(default_model_dir):
    """(model, tokenizer) of the real default target in float32, loaded once per session."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(default_model_dir)
