"""PLD (prompt lookup decoding) on the shared engine, or Hugging Face's prompt lookup (--engine hf).

    python -m evaluation.inference_pld --model-id smollm2-pld-float32 [--max-ngram-size 3 --num-pred-tokens 10]
"""
from __future__ import annotations

import argparse

from evaluation.eval import add_eval_args, load_target, run_cli, run_eval
from evaluation.hf_reference import hf_prompt_lookup_forward
from specdec.drafters.pld import PromptLookupDrafter
from specdec.engine import SpeculativeEngine


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_args(parser)
    parser.add_argument("--engine", choices=["specdec", "hf"], default="specdec",
                        help="specdec: the shared engine; hf: Hugging Face prompt lookup (outside reference)")
    parser.add_argument("--max-ngram-size", type=int, default=3, help="longest n-gram matched (tries n..1)")
    parser.add_argument("--min-ngram-size", type=int, default=1, help="shortest n-gram matched")
    parser.add_argument("--num-pred-tokens", type=int, default=10, help="tokens copied after a match")
    args = parser.parse_args(argv)
    try:
        drafter = PromptLookupDrafter(args.max_ngram_size, args.num_pred_tokens, args.min_ngram_size)
    except ValueError as exc:
        parser.error(str(exc))
    if args.engine == "hf" and args.min_ngram_size != 1:
        parser.error("--engine hf always tries n-grams down to 1 token: --min-ngram-size must be 1")

    model, tokenizer = load_target(args)
    if args.engine == "hf":
        forward = hf_prompt_lookup_forward(model, args.num_pred_tokens, args.max_ngram_size,
                                           args.temperature, args.top_p)
    else:
        forward = SpeculativeEngine(model, drafter, args.temperature, args.top_p).generate
    return run_eval(args, model, tokenizer, forward)


if __name__ == "__main__":
    run_cli(main)
