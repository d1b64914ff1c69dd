"""Outside references: Hugging Face ``generate`` as forward functions for ``run_eval``.

Three references, all through ``model.generate`` with batch size 1:

- ``hf_generate_forward``: plain greedy / sampling decoding (``inference_baseline.py --engine hf``);
- ``hf_assisted_forward``: HF assisted generation with a draft (assistant) model -- SpS's reference;
- ``hf_prompt_lookup_forward``: HF prompt lookup decoding (``prompt_lookup_num_tokens``) -- PLD's.

Accounting. ``generate`` hands a streamer the prompt once and then, after every target forward
pass, exactly the tokens that pass added (plain decoding: one; assisted/prompt lookup: the
accepted candidates plus the target's own token). So ``accept_lengths`` are exact per-step
counts, ``decoding_steps`` is the number of target passes, and the first step is the prefill
pass, which yields the first token -- the convention of Spec-Bench's baseline
(``decoding_steps == new_tokens`` and all accept lengths 1 for plain decoding). Wall time
includes everything ``generate`` does per call (its set-up, the draft's prefill).

Sampling uses temperature and top-p only (``top_k=0`` disables HF's default top-50), the same
distribution the shared engine samples from.

The references' answer files come from the ``hf`` method (``evaluation/inference_hf.py``).
"""
from __future__ import annotations

import copy

import torch
from transformers.generation.streamers import BaseStreamer

from evaluation.eval import EvalConfigError, Forward
from specdec.types import GenerationOutput


class StepRecorder(BaseStreamer):
    """Counts the tokens ``generate`` emits per target pass (the first ``put`` is the prompt)."""

    def __init__(self):
        self.accept_lengths: list[int] = []
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self.accept_lengths.append(int(value.numel()))

    def end(self) -> None:
        pass


def _sampling_kwargs(temperature: float, top_p: float) -> dict:
    if temperature > 0:
        return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    return {"do_sample": False}


def _hf_forward(model, assistant_settings: dict | None = None, **generate_kwargs) -> Forward:
    assistant = generate_kwargs.get("assistant_model")

    def forward(prompt_ids: list[int], max_new_tokens: int, stop_token_ids: set[int]) -> GenerationOutput:
        input_ids = torch.tensor([prompt_ids], device=model.device)
        pad_id = model.generation_config.pad_token_id
        if pad_id is None and stop_token_ids:  # batch size 1 never pads; this only quiets generate
            pad_id = min(stop_token_ids)
        recorder = StepRecorder()
        if assistant is not None:  # HF reads the draft settings from the assistant's generation config
            saved = assistant.generation_config
            assistant.generation_config = copy.deepcopy(saved)
            assistant.generation_config.update(**assistant_settings)
        try:
            sequences = model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                eos_token_id=sorted(stop_token_ids) or None, pad_token_id=pad_id, streamer=recorder,
                **generate_kwargs)
        finally:
            if assistant is not None:
                assistant.generation_config = saved
        token_ids = sequences[0, len(prompt_ids):].tolist()
        assert sum(recorder.accept_lengths) == len(token_ids), "streamer and output disagree"
        return GenerationOutput(token_ids, len(recorder.accept_lengths), recorder.accept_lengths)

    return forward


def hf_generate_forward(model, temperature: float = 0.0, top_p: float = 1.0, static_cache: bool = False) -> Forward:
    """Plain HF decoding: one target pass per token (``static_cache``: HF's preallocated cache)."""
    extra = {"cache_implementation": "static"} if static_cache else {}
    return _hf_forward(model, **extra, **_sampling_kwargs(temperature, top_p))


def hf_assisted_forward(model, assistant_model, temperature: float = 0.0, top_p: float = 1.0,
                        num_assistant_tokens: int = 20, schedule: str = "constant",
                        confidence_threshold: float = 0.4) -> Forward:
    """HF assisted generation (speculative decoding with a draft model of the same vocabulary).

    ``schedule`` is HF's ``num_assistant_tokens_schedule`` ('constant', 'heuristic' or
    'heuristic_transient'); ``confidence_threshold`` (HF's ``assistant_confidence_threshold``)
    ends a draft early where the assistant's top probability falls below it (0: never). The
    settings apply to this forward's calls only; the assistant's own generation config is left as it was.
    """
    settings = {"num_assistant_tokens": num_assistant_tokens, "num_assistant_tokens_schedule": schedule,
                "assistant_confidence_threshold": confidence_threshold}
    return _hf_forward(model, settings, assistant_model=assistant_model, **_sampling_kwargs(temperature, top_p))


def hf_prompt_lookup_forward(model, num_tokens: int = 10, max_ngram: int = 3,
                             temperature: float = 0.0, top_p: float = 1.0) -> Forward:
    """HF prompt lookup: match the last ``max_ngram``..1 tokens in the context, propose ``num_tokens``."""
    if num_tokens < 1 or max_ngram < 1:
        raise EvalConfigError(f"prompt lookup needs num_tokens >= 1 and max_ngram >= 1, got {num_tokens}, {max_ngram}")
    return _hf_forward(model, prompt_lookup_num_tokens=num_tokens, max_matching_ngram_size=max_ngram,
                       **_sampling_kwargs(temperature, top_p))
