"""SD2: a sorted draft with adaptive exits, drafting a chain or (``--tree``) a dynamic tree.

    python -m evaluation.inference_sd2 --drafter-path models/sd2-draft-soft-12 --model-id smollm2-sd2-chain
    python -m evaluation.inference_sd2 --drafter-path models/sd2-draft-soft-12 --model-id smollm2-sd2-tree \\
        --tree --total-token auto --depth 4 --top-k 10

Exits and thresholds default to the draft's spec (``config.sd2``, ``sd2train.draft_spec``); new
exits without thresholds get the default ones; the draft's reduced head (``draft_vocab_file``) is
used when present.
Each answer's ``stats`` carry ``exit_tokens`` (drafted tokens per exit), ``exit_accepted`` and
the time split (draft / verify / other).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from evaluation.eval import (INT8, EvalConfigError, add_draft_dtype_arg, add_eval_args, check_model_folder, draft_dtype,
                             load_target, run_cli, run_eval)
from specdec.drafters.sd2 import AUTO_SIZES, load_sd2_drafter
from specdec.engine import SpeculativeEngine


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _total_token(text: str):
    return text if text == "auto" else int(text)


def add_sd2_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("SD2")
    g.add_argument("--drafter-path", required=True, help="the sorted draft (HF checkpoint)")
    g.add_argument("--submodels", type=_ints, default=None, help="exits, e.g. 6,9,12 (default: the draft's config)")
    g.add_argument("--thresholds", type=_floats, default=None,
                   help="one confidence threshold per exit, the last 0, e.g. 0.5,0.5,0 (default: the draft's config)")
    g.add_argument("--tree", action="store_true", help="draft a dynamic top-k tree instead of a chain")
    g.add_argument("--total-token", type=_total_token, default=60,
                   help="tree size incl. the root, or 'auto': chosen each step from timed verification costs")
    g.add_argument("--depth", type=int, default=4, help="tree expansion steps")
    g.add_argument("--top-k", type=int, default=10, help="children per expanded node and frontier width")
    g.add_argument("--draft-vocab-size", type=int, default=None,
                   help="use only the first N ids of the draft's draft_vocab_file (0: the full head)")
    g.add_argument("--lookup-tokens", type=int, default=0,
                   help="add prompt lookup's continuation (PLD, up to N tokens) to every round as a free branch")
    add_draft_dtype_arg(g, int8=True)


def build_sd2_engine(args, model, tokenizer) -> SpeculativeEngine:
    """The engine with an SD2 drafter; for ``--total-token auto`` the target's verification
    passes are timed on this hardware first."""
    costs, started = None, time.perf_counter()
    if args.tree and args.total_token == "auto":
        costs = SpeculativeEngine(model).time_verification(list(AUTO_SIZES))
    timing_seconds = round(time.perf_counter() - started, 2) if costs else None
    drafter = load_sd2_drafter(args.drafter_path, model, tokenizer, draft_vocab_size=args.draft_vocab_size,
                               dtype=draft_dtype(args), int8_weights=args.draft_dtype == INT8,
                               exits=args.submodels, thresholds=args.thresholds, tree=args.tree,
                               total_token=args.total_token, depth=args.depth, top_k=args.top_k,
                               temperature=args.temperature, top_p=args.top_p, verify_costs=costs,
                               lookup_tokens=args.lookup_tokens)
    drafter.verify_timing_seconds = timing_seconds  # reported in every answer's stats, outside its wall_time
    return SpeculativeEngine(model, drafter, args.temperature, args.top_p)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_args(parser)
    add_sd2_args(parser)
    args = parser.parse_args(argv)
    check_model_folder(Path(args.drafter_path), "--drafter-path")
    model, tokenizer = load_target(args)
    try:
        engine = build_sd2_engine(args, model, tokenizer)
    except ValueError as exc:
        raise EvalConfigError(str(exc)) from None
    return run_eval(args, model, tokenizer, engine.generate)


if __name__ == "__main__":
    run_cli(main)
