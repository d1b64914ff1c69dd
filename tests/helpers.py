"""Helpers the tests share: a tiny random Llama built in a few lines, a tiny model that writes text
with the default target's tokenizer, and the near-greedy check for half-precision output."""
from __future__ import annotations

import copy
import json

import torch


def tiny_llama(num_layers: int = 4, vocab_size: int = 128, hidden: int = 64, seed: int = 0, **overrides):
    """A random LlamaForCausalLM small enough for unit tests (float32, eval mode)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                    num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=512, tie_word_embeddings=True)
    config = LlamaConfig(**{**settings, **overrides})
    return LlamaForCausalLM(config).eval()


PROMPT = [5, 9, 3, 7, 1, 2]  # the prompt tests/unit/conftest.py's ar_tokens continue


def varied_llama(**overrides):
    """A tiny model whose greedy output is not one repeated token (larger init scale)."""
    return tiny_llama(**{"num_layers": 4, "vocab_size": 64, "initializer_range": 0.3, **overrides})


class WrappedDrafter:
    """A drafter that hands everything to ``inner``; tests override one method to change or watch it."""

    def __init__(self, inner):
        self.inner = inner

    def reset(self, prompt_ids):
        self.inner.reset(prompt_ids)

    def propose(self, context, max_depth=None, generator=None):
        return self.inner.propose(context, max_depth, generator)

    def accepted(self, context, num_new, num_drafted):
        self.inner.accepted(context, num_new, num_drafted)

    def stats(self):
        return getattr(self.inner, "stats", dict)()


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


def answer_record(qid, category, turns=None, new_tokens=None, wall_time=None, accept_lengths=None, **extra) -> dict:
    """A Spec-Bench answer record for report tests; unspecified figures are one token per step."""
    new_tokens = new_tokens if new_tokens is not None else [1] * len(turns)
    turns = turns if turns is not None else [f"answer {qid} turn {i}" for i in range(len(new_tokens))]
    accept_lengths = accept_lengths or [1] * sum(new_tokens)
    return {"question_id": qid, "category": category, "answer_id": f"id{qid}", "model_id": "m",
            "choices": [{"index": 0, "turns": turns, "decoding_steps": [len(accept_lengths)] * len(turns),
                         "new_tokens": new_tokens, "wall_time": wall_time or [1.0] * len(turns),
                         "accept_lengths": accept_lengths}], "tstamp": 0.0, **extra}


def write_answers(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def labelled_batch(vocab: int = 128, seed: int = 1, length: int = 12):
    """Two right-padded sequences of ``length`` tokens, the second padded from position 9: a
    4-token prompt without labels, then a reply. Returns (input_ids, labels, attention_mask)."""
    from sd2train.preprocess import IGNORE_INDEX

    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab, (2, length), generator=g)
    labels = input_ids.clone()
    labels[:, :4] = IGNORE_INDEX
    labels[1, 9:] = IGNORE_INDEX  # padding
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0
    return input_ids, labels, attention_mask


def hook_features_checked(target, ids: torch.Tensor) -> torch.Tensor:
    """The head trainers' last-layer features of ``ids`` (one sequence; ``sd2train.exits``' hook),
    asserted equal to the inference runner's last-layer output before the norm; returns them."""
    from sd2train.exits import last_layer_states
    from specdec.llama import LlamaRunner, causal_mask

    runner = LlamaRunner(target)
    n = len(ids)
    expected = runner.run_layers(runner.embed(ids), runner.new_cache(n), range(runner.num_layers),
                                 torch.arange(n), causal_mask(n, 0, "cpu"))
    features = last_layer_states(target, ids[None])
    assert torch.allclose(features, expected, atol=1e-5)
    return features
