"""PLD (prompt lookup decoding) on the shared engine, or Hugging Face's prompt lookup (--engine hf).

    python -m evaluation.inference_pld --model-id smollm2-pld-float32 [--max-ngram-size 3 --num-pred-tokens 10]
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("pld", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
