"""SpS (speculative sampling with a separate draft model) on the shared engine, or Hugging Face's
assisted generation with the same draft (--engine hf).

    python -m evaluation.inference_sps --drafter-path DRAFT --model-id smollm2-sps-float32

The draft must share the target's tokenizer: for the default target, the SD2 draft (a plain HF
checkpoint of the target's first layers, used here at its deepest exit) or any smaller causal LM
with the same vocabulary.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from evaluation.eval import (add_draft_dtype_arg, add_eval_args, check_model_folder, draft_dtype, load_target, run_cli,
                             run_eval)
from evaluation.hf_reference import hf_assisted_forward
from specdec.drafters.sps import SpeculativeSamplingDrafter
from specdec.engine import SpeculativeEngine
from specdec.vocab import load_draft


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_args(parser)
    parser.add_argument("--drafter-path", required=True, help="draft causal LM (HF checkpoint) with the target's vocabulary")
    parser.add_argument("--engine", choices=["specdec", "hf"], default="specdec",
                        help="specdec: the shared engine; hf: Hugging Face assisted generation (outside reference)")
    parser.add_argument("--num-draft-tokens", type=int, default=5, help="first draft length (then +2 / -1 per round)")
    parser.add_argument("--max-draft-tokens", type=int, default=20, help="longest draft")
    add_draft_dtype_arg(parser)
    args = parser.parse_args(argv)
    if args.engine == "hf" and args.draft_dtype:
        parser.error("--draft-dtype is for --engine specdec (HF assisted generation runs both models in one dtype)")
    if not 1 <= args.num_draft_tokens <= args.max_draft_tokens:
        parser.error(f"need 1 <= --num-draft-tokens ({args.num_draft_tokens}) <= --max-draft-tokens ({args.max_draft_tokens})")

    check_model_folder(Path(args.drafter_path), "--drafter-path")
    model, tokenizer = load_target(args)
    draft, _ = load_draft(args.drafter_path, model, tokenizer, draft_dtype(args))  # refuses another vocabulary
    if args.engine == "hf":
        # heuristic_transient: HF's +2/-1 schedule, restarted every generate call like our drafter
        forward = hf_assisted_forward(model, draft, args.temperature, args.top_p, args.num_draft_tokens,
                                      "heuristic_transient")
    else:
        drafter = SpeculativeSamplingDrafter(draft, model.config.vocab_size, args.temperature, args.top_p,
                                             args.num_draft_tokens, args.max_draft_tokens)
        forward = SpeculativeEngine(model, drafter, args.temperature, args.top_p).generate
    return run_eval(args, model, tokenizer, forward)


if __name__ == "__main__":
    run_cli(main)
