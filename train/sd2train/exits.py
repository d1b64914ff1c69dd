"""Exits of a sorted draft: the output after k decoder layers, through the shared norm and head.

An exit ``k`` = ``lm_head(final_norm(h_k))`` where ``h_k`` is the raw hidden state after ``k``
layers (after ``adapter_k(h_k)`` in a draft with exit adapters, ``sd2.exit_adapters``). We capture ``h_k`` with forward hooks on the decoder layers instead of reading
``output_hidden_states``: what that returns for the last layer (normed or not) differs between
transformers versions, and hooks also work when the layers are wrapped by FSDP or DeepSpeed.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from sd2.exit_adapters import exit_adapters_of, run_exit_adapters


def parse_int_list(text: str | list | tuple, what: str = "exits") -> list[int]:
    """'6,9,12' (or a list) -> [6, 9, 12], with a clear error for anything else."""
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [part.strip() for part in str(text).split(",") if part.strip()]
    try:
        return [int(item) for item in items]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None


def base_model(model: nn.Module) -> nn.Module:
    """The decoder stack (``model.model``) of a causal LM whose layers sit in ``model.layers``."""
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(base, "norm"):
        raise ValueError(
            f"{type(model).__name__} is not supported: expected a decoder-only model whose decoder "
            "layers sit in model.layers with a final model.norm (Llama, Vicuna, Mistral, Qwen2, SmolLM2)"
        )
    return base


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return base_model(model).layers


@contextmanager
def capture_exit_states(model: nn.Module, exits: list[int]):
    """Inside the block, a forward of ``model`` fills the yielded dict {k: h_k}.

    Hooks are removed on exit, so activation-checkpointing recomputation in backward does not
    capture again.
    """
    layers = decoder_layers(model)
    captured: dict[int, torch.Tensor] = {}

    def hook_for(k):
        def hook(_module, _args, output):
            captured[k] = output[0] if isinstance(output, tuple) else output
        return hook

    handles = [layers[k - 1].register_forward_hook(hook_for(k)) for k in exits]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture_layer_arguments(model: nn.Module):
    """Inside the block, a forward of ``model`` fills the yielded dict with the keyword arguments its
    first decoder layer was called with (mask, rotary embeddings, positions): what an exit adapter
    is called with, as the model builds them in this transformers version."""
    arguments: dict = {}

    def hook(_module, _args, kwargs):
        arguments.update(kwargs)

    handle = decoder_layers(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield arguments
    finally:
        handle.remove()


def exit_states(model: nn.Module, exits: list[int], input_ids, attention_mask=None) -> dict[int, torch.Tensor]:
    """{k: h_k (batch, seq, hidden)} for each exit, from one forward of the (possibly wrapped) model;
    in a draft with exit adapters, each exit's adapter output.

    The root forward is called (not ``model.model``) so FSDP gathers the root's parameters; its
    own head runs on one position only (``logits_to_keep=1``).
    """
    inner = unwrap(model)
    adapters = exit_adapters_of(inner)
    with capture_exit_states(inner, exits) as captured, \
            (capture_layer_arguments(inner) if adapters is not None else nullcontext({})) as layer_arguments:
        model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1, use_cache=False)
    missing = [k for k in exits if k not in captured]
    if missing:
        raise RuntimeError(f"the forward did not reach exits {missing}")
    if adapters is not None:
        return run_exit_adapters(adapters, captured, layer_arguments)
    return captured


def last_layer_states(model: nn.Module, input_ids, attention_mask=None) -> torch.Tensor:
    """The output of the model's last decoder layer, before the final norm (batch, seq, hidden): the
    features an EAGLE head reads (what ``output_hidden_states`` returns last is normed in some
    transformers versions, hence the hook)."""
    depth = len(decoder_layers(unwrap(model)))
    return exit_states(model, [depth], input_ids, attention_mask)[depth]


def unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside DDP/FSDP/DeepSpeed wrappers."""
    while not hasattr(model, "lm_head") and hasattr(model, "module"):
        model = model.module
    return model


def head_logits(model: nn.Module, normed: torch.Tensor, vocab_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The LM head over the full vocabulary, or over ``vocab_ids`` only (a reduced draft head)."""
    head = unwrap(model).get_output_embeddings()
    if vocab_ids is None:
        return head(normed)
    bias = head.bias[vocab_ids] if getattr(head, "bias", None) is not None else None
    return torch.nn.functional.linear(normed, head.weight[vocab_ids], bias)


def exit_logits(model: nn.Module, hidden: torch.Tensor, vocab_ids: torch.Tensor | None = None) -> torch.Tensor:
    """lm_head(final_norm(hidden)) with the model's own, shared norm and head."""
    return head_logits(model, base_model(unwrap(model)).norm(hidden), vocab_ids)


def all_exit_logits(model: nn.Module, exits: list[int], input_ids, attention_mask=None,
                    positions: slice = slice(None)) -> dict[int, torch.Tensor]:
    """{k: logits (batch, positions, vocab)} for evaluation; the head runs on ``positions`` only."""
    states = exit_states(model, exits, input_ids, attention_mask)
    return {k: exit_logits(model, h[:, positions]) for k, h in states.items()}


def target_states(target, layers, input_ids, attention_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen target's states after each of ``layers`` side by side (B, T, 3H), and its logits
    (B, T, V), from one forward."""
    with capture_exit_states(unwrap(target), list(layers)) as captured:
        logits = target(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return torch.cat([captured[k] for k in layers], dim=-1), logits
