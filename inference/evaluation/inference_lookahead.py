"""Lookahead decoding on the shared engine (see specdec/drafters/lookahead.py for how its Jacobi
window and verification branch ride in one verified tree).

    python -m evaluation.inference_lookahead --model-id smollm2-lookahead-float32 [--level 5 --window 7 --guess 7]
"""
from __future__ import annotations

import argparse

from evaluation.eval import add_eval_args, load_target, run_cli, run_eval
from specdec.drafters.lookahead import LookaheadDrafter
from specdec.engine import SpeculativeEngine


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_args(parser)
    parser.add_argument("--level", type=int, default=5, help="n-gram size N (the window has N-1 levels)")
    parser.add_argument("--window", type=int, default=7, help="Jacobi window width W")
    parser.add_argument("--guess", type=int, default=7, help="n-grams verified per step (pool entries per key)")
    parser.add_argument("--no-pool-from-prompt", action="store_true",
                        help="start with an empty n-gram pool (the original's default) instead of the prompt's n-grams")
    args = parser.parse_args(argv)
    try:
        drafter = LookaheadDrafter(args.level, args.window, args.guess, not args.no_pool_from_prompt, args.seed)
    except ValueError as exc:
        parser.error(str(exc))

    model, tokenizer = load_target(args)
    forward = SpeculativeEngine(model, drafter, args.temperature, args.top_p).generate
    return run_eval(args, model, tokenizer, forward)


if __name__ == "__main__":
    run_cli(main)
