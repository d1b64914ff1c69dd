"""Vanilla autoregressive decoding (AR): the baseline every speed-up is measured against.

    python -m evaluation.inference_baseline --model-id smollm2-ar-float32            # the shared engine
    python -m evaluation.inference_baseline --model-id smollm2-ar_hf-float32 --engine hf   # HF generate

On the shared engine AR is the drafter that proposes nothing, so every method is compared with
the same forward, cache and accounting; ``--engine hf`` is the outside reference.
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("ar", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
