"""Hugging Face ``generate`` references (``evaluation/hf_reference.py``) as Spec-Bench answer files:
plain decoding, prompt lookup, or assisted generation with a draft, e.g.::

    python -m evaluation.inference_hf --method generate --model-id smollm2-hf-ar-float32
    python -m evaluation.inference_hf --method prompt_lookup --model-id smollm2-hf-pld-float32
    python -m evaluation.inference_hf --method assisted --drafter-path DRAFT --model-id smollm2-hf-sps-float32
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("hf", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
