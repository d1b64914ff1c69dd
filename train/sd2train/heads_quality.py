"""Held-out report of Medusa or Hydra heads (``sd2train.heads``): each head's accuracy by rank.

    python -m sd2train.heads_quality --heads models/medusa-smollm2-135m [--prompts 32 --new-tokens 64]

On the exit report's held-out prompts and positions (``sd2train.exit_quality``: held-out ShareGPT
prompts continued greedily by the target), teacher-forced along the target's continuation: for
every continuation token, how often the target's greedy choice there is head k's rank-r token
(r = 0..9), head k reading the target's true feature k + 2 positions earlier (and, for Hydra, the
true tokens between). Rank 0 is the head's top-1 accuracy; the per-rank rates are what Medusa's
tree search weighs, and ``specdec.drafters.heads`` builds its static tree from them. Writes
``heads_quality.json`` beside the heads ("rank_accuracy": one list per head, "top1": one rate per
head); another prompt set's report (``--min-prompt-tokens``) goes beside it under its own name.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sd2.draft_heads import QUALITY_REPORT_FILE as REPORT_FILE
from sd2train.errors import run_cli
from sd2train.exits import exit_logits, last_layer_states
from sd2train.report_text import (
    DEFAULT_PROMPTS,
    add_heldout_args,
    count_in_report_name,
    heldout_sequences,
    prompt_set_title,
    report_name,
    write_report,
)

RANKS = 10


@torch.no_grad()
def evaluate_heads(heads, target, sequences, prompt_lengths, ranks: int = RANKS) -> dict:
    """{"positions", "top1", "rank_accuracy"} over every continuation token of ``sequences``
    (prompt + the target's greedy continuation; ``prompt_lengths`` tokens of each are prompt)."""
    from tqdm import tqdm

    hydra = heads.kind == "hydra"
    vocab_ids = torch.tensor(heads.draft_vocab) if heads.draft_vocab is not None else None
    hits = torch.zeros(heads.num_heads, ranks, dtype=torch.long)
    positions = 0
    for seq, prompt_len in tqdm(list(zip(sequences, prompt_lengths)), desc=f"{heads.kind} heads", unit="seq"):
        if len(seq) <= prompt_len:
            continue
        if prompt_len < heads.num_heads + 1:
            raise ValueError(f"a prompt of {prompt_len} tokens: head {heads.num_heads - 1} needs a feature "
                             f"{heads.num_heads + 1} tokens before the first continuation token")
        ids = torch.tensor(seq)
        features = last_layer_states(target, ids[None])[0]
        # The target's greedy choice for each continuation token j (its logits at j - 1).
        wanted = exit_logits(target, features[prompt_len - 1:-1]).argmax(-1)
        positions += len(wanted)
        x = heads.normed(features)
        for k in range(heads.num_heads):
            rows = torch.arange(prompt_len - k - 2, len(seq) - k - 2)  # row t: head k drafts token t + k + 2
            prefix = ids[rows[:, None] + torch.arange(1, k + 2)] if hydra else None
            top = heads.head_logits(k, x[rows], prefix).topk(ranks, dim=-1).indices
            if vocab_ids is not None:
                top = vocab_ids[top]
            hits[k] += (top == wanted[:, None]).sum(0)
    if not positions:
        raise ValueError("no continuation tokens to measure the heads on")
    rank_accuracy = (hits.double() / positions).tolist()
    return {"positions": positions, "top1": [head[0] for head in rank_accuracy], "rank_accuracy": rank_accuracy}


def load_heads_measured(heads_path, target_path=None):
    """(heads, their target, the target's tokenizer, the target's path), in float32; the target
    defaults to the one the heads name, and heads for another target are refused."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sd2.draft_heads import CONFIG_KEY, load_draft_heads

    config_file = Path(heads_path, "config.json")
    if not config_file.is_file():
        raise ValueError(f"no draft heads at {heads_path} (config.json missing)")
    named = (json.loads(config_file.read_text()).get(CONFIG_KEY) or {}).get("target")
    target_path = str(target_path or named or "")
    if not target_path:
        raise ValueError(f"{heads_path} names no target: pass --target")
    target = AutoModelForCausalLM.from_pretrained(target_path, dtype=torch.float32).eval()
    heads = load_draft_heads(heads_path, target, torch.float32)
    return heads, target, AutoTokenizer.from_pretrained(target_path), target_path


def format_report(report: dict) -> str:
    ranks = len(report["rank_accuracy"][0])
    lines = [f"{report['kind']} heads {report['heads']} vs {report['target']} ({prompt_set_title(report)}; "
             "teacher-forced with the target's features): accuracy by rank",
             f"{'head':>4} {'drafts':>6} " + " ".join(f"{f'r={r}':>6}" for r in range(ranks)) + f" {f'top-{ranks}':>7}"]
    for k, rates in enumerate(report["rank_accuracy"]):
        lines.append(f"{k:>4} {f't+{k + 2}':>6} " + " ".join(f"{a:>6.1%}" for a in rates) + f" {sum(rates):>7.1%}")
    return "\n".join(lines)


def heads_quality(heads_path, target_path=None, num_prompts: int = 32, new_tokens: int = 64,
                  max_prompt_tokens: int = 192, data_path=None, conv_template=None, write: bool = True,
                  heldout_fraction: float = 0.02, min_prompt_tokens: int = 0,
                  prompt_count_in_name: int | None = None) -> dict:
    """The heads' held-out report (see the module doc), on the exit report's prompts and positions
    (written beside the standard report where ``prompt_count_in_name`` is given)."""
    started = time.time()
    heads, target, tokenizer, target_path = load_heads_measured(heads_path, target_path)
    prompts, sequences = heldout_sequences(target_path, target, tokenizer, conv_template, num_prompts, new_tokens,
                                           max_prompt_tokens, min_prompt_tokens, data_path, heldout_fraction)
    report = {"heads": str(heads_path), "target": target_path, "kind": heads.kind, "num_heads": heads.num_heads,
              "draft_vocab_size": len(heads.draft_vocab) if heads.draft_vocab is not None else None,
              "prompts": len(prompts), "prompt_tokens": [min_prompt_tokens, max_prompt_tokens],
              "new_tokens": new_tokens, **evaluate_heads(heads, target, sequences, [len(p) for p in prompts]),
              "seconds": round(time.time() - started, 1)}
    print(format_report(report))
    if write:
        write_report(Path(heads_path, report_name(REPORT_FILE, min_prompt_tokens, max_prompt_tokens,
                                                  prompt_count_in_name)), report)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", required=True, help="a folder of Medusa or Hydra heads (sd2train.heads)")
    parser.add_argument("--target", default=None, help="target checkpoint (default: the one the heads' config names)")
    add_heldout_args(parser, "heads_quality-nN.json", DEFAULT_PROMPTS)
    args = parser.parse_args(argv)
    count_in_name = count_in_report_name(args.prompts)
    report = heads_quality(args.heads, args.target, args.prompts, args.new_tokens, args.max_prompt_tokens,
                           args.data_path, args.conv_template, min_prompt_tokens=args.min_prompt_tokens,
                           prompt_count_in_name=count_in_name)
    if args.output:
        write_report(Path(args.output), report)


if __name__ == "__main__":
    run_cli(main)
