"""Shared fixtures: a tiny random Llama built in a few lines, and the real default target."""
from __future__ import annotations

import copy

import pytest
import torch

from sd2train.assets import DEFAULT_MODEL_DIR


def tiny_llama(num_layers: int = 4, vocab_size: int = 128, hidden: int = 64, seed: int = 0, **overrides):
    """A random LlamaForCausalLM small enough for unit tests (float32, eval mode)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                    num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=512, tie_word_embeddings=True)
    config = LlamaConfig(**{**settings, **overrides})
    return LlamaForCausalLM(config).eval()


def save_tiny_text_target(path, tokenizer_dir, num_layers: int = 2, seed: int = 0):
    """A tiny random Llama with the default target's tokenizer, saved to ``path``, that writes
    visible text: a random model's favourite tokens are often special or blank ones (which decode
    to nothing, and a blank reply is skipped), so their (tied) embedding rows are zeroed."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = tiny_llama(num_layers=num_layers, vocab_size=len(tokenizer), hidden=32, seed=seed)
    blank = [i for i in range(len(tokenizer)) if not tokenizer.decode([i], skip_special_tokens=True).strip()]
    model.get_input_embeddings().weight.data[blank] = 0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def greedy_gaps(model, prompt: list[int], tokens: list[int]) -> list[float]:
    """For each generated token, how far its float32 logit lies below the best one at that
    position (0 where it is the float32 argmax). Half-precision decoding may flip near-ties, so
    its gaps are small but not all zero; a wrong token (bad cache, bad verification) has a large one."""
    reference = copy.deepcopy(model).float()
    ids = torch.tensor([prompt + tokens], device=next(reference.parameters()).device)
    with torch.no_grad():
        logits = reference(ids).logits[0, len(prompt) - 1:-1].float()
    chosen = logits.gather(1, ids[0, len(prompt):, None])[:, 0]
    return (logits.max(dim=-1).values - chosen).tolist()


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
