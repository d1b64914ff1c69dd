"""SAM decoding on the shared engine: a suffix automaton over the prompt and the answer.

    python -m evaluation.inference_samd --model-id smollm2-samd-float32 [--samd_n_predicts 40]
    python -m evaluation.inference_samd --model-id smollm2-samd-recycling --aux recycling --samd_len_threshold 5
    python -m evaluation.inference_samd --model-id smollm2-samd-sd2 --aux sd2 --aux-path models/sd2-draft-soft-12
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("samd", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
