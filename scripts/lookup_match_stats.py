"""How often prompt lookup's continuation is right, by the length of the n-gram it matched.

    .venv/bin/python scripts/lookup_match_stats.py [--answer-file assets/spec_bench_48/smollm2-135m-ar-float32-temp-0.0.jsonl]

Walks each answer's first turn (token ids recorded by the harness) as PLD would: at each round the
longest n-gram suffix (3 down to 1) seen before proposes up to 4 tokens; counts rounds per n-gram
size, how often the first proposed token is the answer's, and the mean number kept. No model runs.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "inference"))

from sd2.paths import DEFAULT_MODEL_DIR, model_name  # noqa: E402
from specdec.drafters.pld import longest_match  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answer-file", default=str(ROOT / f"assets/spec_bench_48/{model_name()}-ar-float32-temp-0.0.jsonl"))
    parser.add_argument("--question-file", default=str(ROOT / "data/spec_bench/question.jsonl"))
    parser.add_argument("--tokenizer", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--lookup-tokens", type=int, default=4)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    questions = {q["question_id"]: q for q in map(json.loads, open(args.question_file))}
    stats = collections.defaultdict(lambda: [0, 0, 0])  # n-gram size -> rounds, first token right, kept
    for record in map(json.loads, open(args.answer_file)):
        text = tokenizer.apply_chat_template([{"role": "user", "content": questions[record["question_id"]]["turns"][0]}],
                                             add_generation_prompt=True, tokenize=False)
        prompt = tokenizer(text, add_special_tokens=False).input_ids
        answer = record["choices"][0]["token_ids"][0]
        tokens, i = np.array(prompt + answer), 0
        while i < len(answer):
            match = longest_match(tokens[: len(prompt) + i], 1, 3, args.lookup_tokens)
            found, size = match or ([], 0)
            kept = 0
            for proposed, actual in zip(found, answer[i:i + args.lookup_tokens]):
                if proposed != actual:
                    break
                kept += 1
            counts = stats[size]
            counts[0], counts[1], counts[2] = counts[0] + 1, counts[1] + (kept > 0), counts[2] + kept
            i += kept + 1
    for size in sorted(stats):
        rounds, right, kept = stats[size]
        print(f"match of {size} token(s): {rounds} rounds, first token right {right / rounds:.1%}, "
              f"mean kept {kept / rounds:.2f}")


if __name__ == "__main__":
    main()
