"""Exit adapters: one decoder layer of its own at each exit of a frozen prefix of the target.

A plain sorted draft fine-tunes its layers for every exit at once: exit 6's loss pulls layers 1-6
toward states the final norm and head can read, while exits 9 and 12 need them to stay the
intermediate states their deeper layers expect, and the exits end up agreeing with the target
about equally (train/README.md). A draft with exit adapters keeps its decoder layers equal to the
target's first N (frozen) and gives each exit k one trainable decoder layer of the target's own kind
that reads the target's true state after k layers: exit k = ``head(norm(adapter_k(h_k)))`` while
``h_k`` itself goes on, unchanged, into layer k + 1 (Kangaroo's adapter, Balcony's exit layers). The
exits no longer compete for shared layers, and the prefix's keys and values are the target's own.

Stored beside the draft's weights in ``exit_adapters.safetensors`` (keys ``"<exit>.<parameter>"``),
marked by ``"exit_adapters": true`` in ``config.sd2`` (``sd2.draft_spec``).
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

ADAPTERS_FILE = "exit_adapters.safetensors"
ADAPTER_INITS = ("last", "next")  # the target's last decoder layer, or the one after the exit


def new_exit_adapters(target_layers, exits: list[int], init: str = "last") -> nn.ModuleDict:
    """One adapter per exit, each a copy of a decoder layer of the target (``target_layers``, its
    ``model.layers``): with ``init="last"`` its last layer, the one whose output the final norm and
    head read; with ``"next"`` layer k + 1, the one that reads exit k's state."""
    if init not in ADAPTER_INITS:
        raise ValueError(f"exit adapter init must be one of {ADAPTER_INITS}, got {init!r}")
    depth = len(target_layers)
    if exits[-1] >= depth and init == "next":
        raise ValueError(f"init 'next' needs a target layer after every exit; exit {exits[-1]} is the target's last")
    sources = {k: target_layers[-1] if init == "last" else target_layers[k] for k in exits}
    return nn.ModuleDict({str(k): copy.deepcopy(layer) for k, layer in sources.items()})


def exit_adapters_of(model: nn.Module) -> nn.ModuleDict | None:
    """The adapters attached to a draft model (``model.exit_adapters``), or None."""
    return getattr(model, "exit_adapters", None)


def attach_exit_adapters(model: nn.Module, adapters: nn.ModuleDict) -> None:
    """Registers ``adapters`` as ``model.exit_adapters``: trained and saved in checkpoints with it."""
    model.exit_adapters = adapters


def save_exit_adapters(adapters: nn.ModuleDict, folder: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(folder, ADAPTERS_FILE)
    save_file({name: t.detach().contiguous() for name, t in adapters.state_dict().items()}, str(path))
    return path


def check_exit_adapters_file(folder: str | Path) -> Path:
    """The folder's adapters file, there and whole (``sd2.weight_files``), else an error naming it:
    checked before anything loads."""
    from sd2.weight_files import safetensors_problem

    path = Path(folder, ADAPTERS_FILE)
    if not path.is_file():
        raise ValueError(f"{Path(folder, 'config.json')} says the draft has exit adapters, but {path} does not exist")
    problem = safetensors_problem(path)
    if problem:
        raise ValueError(problem)
    return path


def load_exit_adapters(model: nn.Module, folder: str | Path, exits: list[int]) -> nn.ModuleDict:
    """The adapters of the draft in ``folder`` for ``exits``, built as decoder layers of ``model``'s
    own kind and attached to it; a missing file or one that does not hold exactly these exits'
    layers is an error that names it."""
    from safetensors.torch import load_file

    path = check_exit_adapters_file(folder)
    stored = load_file(str(path))
    reference = model.model.layers[0]
    layer_kind = type(reference)
    adapters = nn.ModuleDict({str(k): layer_kind(model.config, layer_idx=len(model.model.layers) + j)
                              for j, k in enumerate(exits)})
    expected = set(adapters.state_dict())
    if set(stored) != expected:
        missing, extra = sorted(expected - set(stored))[:3], sorted(set(stored) - expected)[:3]
        raise ValueError(f"{path} does not hold the exit adapters of exits {exits}"
                         f"{f' (missing {missing})' if missing else ''}{f' (unexpected {extra})' if extra else ''}")
    adapters.load_state_dict(stored)
    param = next(reference.parameters())
    adapters.to(device=param.device, dtype=param.dtype)
    attach_exit_adapters(model, adapters)
    return adapters


def run_exit_adapters(adapters: nn.ModuleDict, states: dict[int, torch.Tensor], layer_kwargs: dict) -> dict[int, torch.Tensor]:
    """{k: adapter_k(h_k)} for the captured exit states, each adapter called with the arguments the
    model's own decoder layers were called with (mask, rotary embeddings, positions)."""
    missing = [k for k in states if str(k) not in adapters]
    if missing:
        raise ValueError(f"the draft has exit adapters for exits {sorted(int(k) for k in adapters)}, not {missing}")
    outputs = {k: adapters[str(k)](h, **layer_kwargs) for k, h in states.items()}
    return {k: out[0] if isinstance(out, tuple) else out for k, out in outputs.items()}
