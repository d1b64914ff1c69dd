"""Autoregressive decoding by llama.cpp on the default target's GGUF (an outside CPU reference).

    pip install -e .[llamacpp]
    python -m evaluation.inference_ar_llamacpp --model-id smollm2-llamacpp-ar [--gguf-path FILE --threads 2]
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("ar_llamacpp", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
