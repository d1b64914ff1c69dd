"""Lookahead decoding on the shared engine (see specdec/drafters/lookahead.py for how its Jacobi
window and verification branch ride in one verified tree).

    python -m evaluation.inference_lookahead --model-id smollm2-lookahead-float32 [--level 5 --window 7 --guess 7]
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("lookahead", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
