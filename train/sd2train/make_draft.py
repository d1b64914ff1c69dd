"""Make a draft from a target: its first N decoder layers plus embedding, final norm and LM head.

    python -m sd2train.make_draft --target models/smollm2-135m-instruct --layers 12 \
        --output models/sd2-draft-12 [--exits 6,9,12] [--draft-vocab-size 8192]

The draft is a plain Hugging Face checkpoint (``AutoModelForCausalLM`` loads it) with
``num_hidden_layers = N`` and an ``sd2`` entry in its config that the inference side reads (the
draft spec, ``sd2.draft_spec``).
``draft_vocab_file`` names a JSON list of the most frequent token ids in ShareGPT assistant text
(special and stop tokens first), for a draft head over a reduced vocabulary.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from sd2.draft_spec import DRAFT_VOCAB_FILE, DraftSpec, default_exits, validate_exits
from sd2train.exits import decoder_layers, parse_int_list
from sd2train.errors import InputError, run_cli


def truncate_to_first_layers(model, num_layers: int):
    """Keep decoder layers [0, num_layers) in place and make the config say so."""
    layers = decoder_layers(model)
    depth = len(layers)
    if not 1 <= num_layers < depth:
        raise ValueError(f"a draft needs 1 <= N < the target's depth ({depth} layers), got N = {num_layers}")
    model.model.layers = torch.nn.ModuleList(list(layers)[:num_layers])
    config = model.config
    config.num_hidden_layers = num_layers
    # Per-layer lists (e.g. layer_types in Qwen2/Mistral configs) must match the new depth.
    for name in ("layer_types",):
        value = getattr(config, name, None)
        if isinstance(value, list) and len(value) == depth:
            setattr(config, name, value[:num_layers])
    return model


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Special tokens plus the generation config's eos ids, in a stable order."""
    ids = list(tokenizer.all_special_ids)
    eos = getattr(generation_config, "eos_token_id", None)
    ids += eos if isinstance(eos, list) else ([eos] if eos is not None else [])
    return list(dict.fromkeys(i for i in ids if i is not None))


def count_assistant_tokens(tokenizer, conversations, batch_size: int = 256) -> Counter:
    from tqdm import tqdm

    texts = [m["content"] for c in conversations for m in c["messages"] if m["role"] == "assistant"]
    counts: Counter = Counter()
    for start in tqdm(range(0, len(texts), batch_size), desc="draft vocab", unit="batch"):
        for ids in tokenizer(texts[start:start + batch_size], add_special_tokens=False)["input_ids"]:
            counts.update(ids)
    return counts


def draft_vocab(tokenizer, conversations, size: int, generation_config=None,
                always: list[int] | None = None) -> list[int]:
    """The ``size`` (at most the tokenizer's) most frequent token ids of the conversations' assistant
    text, ``always`` first (default: the special tokens and ``generation_config``'s stop tokens)."""
    always = stop_token_ids(tokenizer, generation_config) if always is None else always
    size = min(size, len(tokenizer))
    if size <= len(always):
        raise ValueError(f"--draft-vocab-size {size} must exceed the {len(always)} special tokens")
    counts = count_assistant_tokens(tokenizer, conversations)
    chosen = list(dict.fromkeys(always))
    for token, _ in counts.most_common():
        if len(chosen) >= size:
            break
        if token not in chosen:
            chosen.append(token)
    return chosen


# What an earlier draft in the folder leaves that the new one would not replace (stale reports, the
# quick start's record of its replies, weight shards).
STALE_DRAFT_FILES = ("exit_quality*.json", "replies.done", "*.safetensors", "*.safetensors.index.json",
                     DRAFT_VOCAB_FILE)


def check_output(output: Path, overwrite: bool) -> None:
    """A folder that holds files (a trained draft?) is refused unless ``overwrite``, which clears
    what the earlier draft left there."""
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {output} is a file, not a folder")
    # Empty, or only the vocabulary an interrupted make_draft wrote before the checkpoint: start again.
    if not output.is_dir() or {p.name for p in output.iterdir()} <= {DRAFT_VOCAB_FILE}:
        return
    if not overwrite:
        raise InputError(f"--output {output} is not empty (a trained draft?): choose another folder, or pass "
                         "--overwrite to replace the draft and remove its reports")
    for pattern in STALE_DRAFT_FILES:
        for stale in output.glob(pattern):
            stale.unlink()


def make_draft(target: str | Path, num_layers: int, output: str | Path, exits: list[int] | None = None,
               draft_vocab_size: int = 8192, data_path: str | Path | None = None,
               vocab_conversations: int = 20000, overwrite: bool = False) -> Path:
    """Write the draft checkpoint (and its tokenizer and draft vocabulary) to ``output``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if draft_vocab_size < 0:
        raise InputError(f"--draft-vocab-size must be >= 0 (0 = no reduced vocabulary), got {draft_vocab_size}")
    check_output(Path(output), overwrite)
    exits = validate_exits(exits or default_exits(num_layers), num_layers)
    if exits[-1] != num_layers:
        raise ValueError(f"the last exit must be the draft's last layer {num_layers}, got {exits}")
    model = AutoModelForCausalLM.from_pretrained(target, dtype="auto")
    target_depth = model.config.num_hidden_layers
    truncate_to_first_layers(model, num_layers)
    tokenizer = AutoTokenizer.from_pretrained(target)
    output = Path(output)
    spec = DraftSpec(exits, target=str(target), target_num_hidden_layers=target_depth)
    if draft_vocab_size > 0:
        from sd2train.data import load_sharegpt, split_train_heldout

        conversations, _ = load_sharegpt(data_path)
        train, _ = split_train_heldout(conversations)
        vocab = draft_vocab(tokenizer, train[:vocab_conversations], draft_vocab_size, model.generation_config)
        output.mkdir(parents=True, exist_ok=True)
        (output / DRAFT_VOCAB_FILE).write_text(json.dumps(vocab))
        spec.draft_vocab_file = DRAFT_VOCAB_FILE
    model.config.sd2 = spec.to_config()
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    print(f"[make-draft] {output}: first {num_layers} of {target_depth} layers of {target}, exits {exits}")
    return output


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="target checkpoint (path or hub name)")
    parser.add_argument("--layers", type=int, required=True, help="N: keep the target's first N decoder layers")
    parser.add_argument("--output", required=True, help="folder for the draft checkpoint")
    parser.add_argument("--exits", default=None, help="comma-separated exits, e.g. 6,9,12 (default N/2,3N/4,N)")
    parser.add_argument("--draft-vocab-size", type=int, default=8192,
                        help="size of the reduced draft vocabulary (0 = none)")
    parser.add_argument("--data-path", default=None, help="ShareGPT JSON for the vocabulary counts (default: package)")
    parser.add_argument("--vocab-conversations", type=int, default=20000,
                        help="count tokens over this many training conversations")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a draft already in --output (and remove its reports)")
    args = parser.parse_args(argv)
    exits = parse_int_list(args.exits) if args.exits else None
    make_draft(args.target, args.layers, args.output, exits, args.draft_vocab_size, args.data_path,
               args.vocab_conversations, args.overwrite)


if __name__ == "__main__":
    run_cli(main)
