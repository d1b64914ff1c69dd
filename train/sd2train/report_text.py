"""The text the quality reports (``exit_quality``, ``heads_quality``) measure along, and their
files: held-out ShareGPT prompts continued greedily by the target (cached per target), or AR's
Spec-Bench answers; the report's file name for a prompt set and its atomic write."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from sd2.paths import REPO_ROOT
from sd2.spec_bench import task_of
from sd2train.errors import InputError

DEFAULT_PROMPTS = 32  # the standard prompt set: a model's own report (the trainers' default too)
CACHE_DIR = REPO_ROOT / "outputs" / "exit_quality_cache"


def heldout_prompts(tokenizer, fmt, num_prompts: int, max_prompt_tokens: int, data_path=None,
                    heldout_fraction: float = 0.02, min_prompt_tokens: int = 0) -> list[list[int]]:
    """Token ids of the first user turn of held-out conversations, as generation prompts, those of
    ``min_prompt_tokens`` to ``max_prompt_tokens`` tokens."""
    from sd2train.data import load_sharegpt, split_train_heldout
    from sd2train.preprocess import chat_turns

    conversations, _ = load_sharegpt(data_path, verbose=False)
    _, heldout = split_train_heldout(conversations, heldout_fraction)
    prompts = []
    for conv in heldout:
        shaped = chat_turns(conv["messages"])
        if shaped is None or not shaped[1][0]["content"].strip():
            continue
        text = fmt.prompt(shaped[0], shaped[1][:1])
        ids = tokenizer(text, add_special_tokens=fmt.add_special_tokens)["input_ids"]
        if min_prompt_tokens <= len(ids) <= max_prompt_tokens:
            prompts.append(ids)
        if len(prompts) == num_prompts:
            break
    if not prompts:
        raise ValueError(f"no held-out prompt has {min_prompt_tokens} to {max_prompt_tokens} tokens")
    return prompts


@torch.no_grad()
def greedy_continuations(target, tokenizer, prompts, new_tokens: int, batch_size: int = 8) -> list[list[int]]:
    """prompt + the target's greedy continuation (up to its stop token), one list per prompt."""
    from tqdm import tqdm

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = target.generation_config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos])
    sequences = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="target greedy", unit="batch"):
        batch = prompts[start:start + batch_size]
        width = max(map(len, batch))
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        out = target.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=new_tokens,
                              do_sample=False, pad_token_id=pad)
        for prompt, row in zip(batch, out[:, width:].tolist()):
            cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            sequences.append(prompt + row[:cut])
    return sequences


def cached_continuations(target_name: str, target, tokenizer, prompts, new_tokens: int) -> list[list[int]]:
    """Greedy continuations are deterministic for a target and prompt set: compute them once."""
    name = str(Path(target_name).resolve()) if Path(target_name).exists() else str(target_name)
    key = hashlib.sha256(json.dumps([name, new_tokens, prompts]).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    sequences = greedy_continuations(target, tokenizer, prompts, new_tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sequences))
    return sequences


def answer_sequences(answer_file, question_file, tokenizer, fmt) -> dict[str, tuple[list, list]]:
    """Per task: (prompt + greedy answer token ids, prompt lengths) of the first turns in a float32
    greedy answer file of the evaluation harness (e.g. AR's). Measures the exits on the text they
    will draft at evaluation time; nothing is trained on it."""
    questions = {}
    for line in Path(question_file).read_text().splitlines():
        if line.strip():
            q = json.loads(line)
            questions[q["question_id"]] = q
    by_task: dict[str, tuple[list, list]] = {}
    for line in Path(answer_file).read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        choice = record["choices"][0]
        if "error" in record or not choice.get("token_ids"):
            continue
        if record.get("settings", {}).get("temperature", 0) != 0:
            raise ValueError(f"{answer_file}: answers were sampled; the report needs greedy ones (AR, float32)")
        question = questions.get(record["question_id"])
        if question is None:
            raise ValueError(f"{answer_file}: question {record['question_id']} is not in {question_file}")
        text = fmt.prompt(None, [{"role": "user", "content": question["turns"][0]}])
        prompt = tokenizer(text, add_special_tokens=fmt.add_special_tokens)["input_ids"]
        sequences, lengths = by_task.setdefault(task_of(record["category"]), ([], []))
        sequences.append(prompt + choice["token_ids"][0])
        lengths.append(len(prompt))
    if not by_task:
        raise ValueError(f"{answer_file}: no answered question with token ids")
    return by_task


def heldout_sequences(target_path, target, tokenizer, conv_template, num_prompts: int, new_tokens: int,
                      max_prompt_tokens: int, min_prompt_tokens: int = 0, data_path=None,
                      heldout_fraction: float = 0.02) -> tuple[list[list[int]], list[list[int]]]:
    """(held-out prompts, each continued greedily by the target): the text both reports measure on."""
    from sd2train.preprocess import get_format

    prompts = heldout_prompts(tokenizer, get_format(conv_template, tokenizer), num_prompts, max_prompt_tokens,
                              data_path, heldout_fraction, min_prompt_tokens)
    return prompts, cached_continuations(target_path, target, tokenizer, prompts, new_tokens)


def prompt_set_title(report: dict) -> str:
    low, high = report.get("prompt_tokens", [0, "?"])
    return f"{report['prompts']} held-out prompts of {low}-{high} tokens, {report['positions']} positions"


def report_name(standard: str, min_prompt_tokens: int, max_prompt_tokens: int,
                prompt_count: int | None = None) -> str:
    """The standard prompt set's report is the model's own; another prompt set's goes beside it:
    other prompt lengths (``-prompts-MIN-MAX``), or, with ``prompt_count``, another number of
    prompts (``-nN``: the command line's --prompts other than the default)."""
    name = Path(standard).stem
    if min_prompt_tokens != 0:
        name += f"-prompts-{min_prompt_tokens}-{max_prompt_tokens}"
    if prompt_count is not None:
        name += f"-n{prompt_count}"
    return f"{name}.json"


def write_report(path: Path, report: dict) -> None:
    path.write_text(json.dumps(report, indent=2))
    print(f"report written to {path}")


def count_in_report_name(num_prompts: int) -> int | None:
    """For the command lines: a run on a number of prompts other than the default writes its report
    under a name that says the count, never over the model's own report."""
    if num_prompts < 1:
        raise InputError(f"--prompts must be >= 1 (the number of held-out prompts to measure on), got {num_prompts}")
    return None if num_prompts == DEFAULT_PROMPTS else num_prompts


def add_heldout_args(parser, what: str, default_prompts: int) -> None:
    """The reports' held-out prompt flags (exit_quality, heads_quality); ``what`` names the report
    file written beside the standard one for another prompt count (e.g. 'heads_quality-nN.json')."""
    parser.add_argument("--prompts", type=int, default=default_prompts,
                        help=f"number of held-out prompts (another than {default_prompts}: the report is written "
                             f"beside the standard one, as {what})")
    parser.add_argument("--new-tokens", type=int, default=64, help="greedy tokens generated per prompt")
    parser.add_argument("--max-prompt-tokens", type=int, default=192)
    parser.add_argument("--min-prompt-tokens", type=int, default=0,
                        help="only prompts at least this long (e.g. 256 with --max-prompt-tokens 1024: the "
                             "long-context tasks of Spec-Bench, summarisation and RAG; written beside the standard report)")
    parser.add_argument("--data-path", default=None, help="ShareGPT JSON (default: the package's)")
    parser.add_argument("--conv-template", default=None, help="'vicuna' or the tokenizer's chat template (default)")
    parser.add_argument("--output", default=None, help="write the JSON here too")
