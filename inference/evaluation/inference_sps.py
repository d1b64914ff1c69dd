"""SpS (speculative sampling with a separate draft model) on the shared engine, or Hugging Face's
assisted generation with the same draft (--engine hf).

    python -m evaluation.inference_sps --drafter-path DRAFT --model-id smollm2-sps-float32

The draft must share the target's tokenizer: for the default target, the SD2 draft (a plain HF
checkpoint of the target's first layers, used here at its deepest exit) or any smaller causal LM
with the same vocabulary.
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("sps", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
