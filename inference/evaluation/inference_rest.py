"""REST (retrieval-based speculative decoding) on the shared engine.

    python scripts/build_rest_datastore.py            # once: models/rest/sharegpt-smollm2.npz
    python -m evaluation.inference_rest --model-id smollm2-rest-float32 [--datastore-path P --num-draft 64 --max-token-span 16]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from evaluation.eval import add_eval_args, load_target, run_cli, run_eval
from sd2train.assets import REPO_ROOT
from specdec.drafters.rest import RestDrafter
from specdec.engine import SpeculativeEngine

DEFAULT_DATASTORE = REPO_ROOT / "models" / "rest" / "sharegpt-smollm2.npz"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_args(parser)
    parser.add_argument("--datastore-path", default=str(DEFAULT_DATASTORE),
                        help="datastore built by scripts/build_rest_datastore.py with the target's tokenizer")
    parser.add_argument("--num-draft", type=int, default=64, help="most draft tokens (tree nodes) per step")
    parser.add_argument("--max-token-span", type=int, default=16, help="longest context suffix searched")
    parser.add_argument("--min-token-span", type=int, default=2, help="shortest context suffix searched")
    parser.add_argument("--draft-len", type=int, default=10, help="tokens read after each match")
    parser.add_argument("--max-matches", type=int, default=5000, help="occurrences whose continuations are counted")
    args = parser.parse_args(argv)
    if not Path(args.datastore_path).is_file():
        parser.error(f"REST datastore not found: {args.datastore_path} (build it with scripts/build_rest_datastore.py)")

    model, tokenizer = load_target(args)
    try:
        drafter = RestDrafter(args.datastore_path, args.num_draft, args.max_token_span, args.min_token_span,
                              args.draft_len, args.max_matches, tokenizer=tokenizer)
    except ValueError as exc:
        parser.error(str(exc))
    forward = SpeculativeEngine(model, drafter, args.temperature, args.top_p).generate
    return run_eval(args, model, tokenizer, forward)


if __name__ == "__main__":
    run_cli(main)
