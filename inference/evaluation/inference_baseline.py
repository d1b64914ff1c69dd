"""Vanilla autoregressive decoding (AR): the baseline every speed-up is measured against.

    python -m evaluation.inference_baseline --model-id smollm2-ar-float32            # the shared engine
    python -m evaluation.inference_baseline --model-id smollm2-ar_hf-float32 --engine hf   # HF generate

On the shared engine AR is the drafter that proposes nothing, so every method is compared with
the same forward, cache and accounting; ``--engine hf`` is the outside reference.
"""
from __future__ import annotations

import argparse

from evaluation.eval import add_eval_args, load_target, run_cli, run_eval
from evaluation.hf_reference import hf_generate_forward
from specdec.engine import SpeculativeEngine


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_args(parser)
    parser.add_argument("--engine", choices=["specdec", "hf"], default="specdec",
                        help="specdec: the shared engine; hf: Hugging Face generate (outside reference)")
    args = parser.parse_args(argv)
    model, tokenizer = load_target(args)
    if args.engine == "hf":
        forward = hf_generate_forward(model, args.temperature, args.top_p)
    else:
        forward = SpeculativeEngine(model, None, args.temperature, args.top_p).generate
    return run_eval(args, model, tokenizer, forward)


if __name__ == "__main__":
    run_cli(main)
