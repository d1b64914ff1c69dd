"""EAGLE-2: the EAGLE head drafts a dynamic tree (expanded by path probability, reranked).

    python -m evaluation.inference_eagle2 --ea-model-path models/eagle-smollm2-135m --model-id smollm2-eagle2

The head (``python -m sd2train.eagle``) must have been trained for this target: one for another
target (hidden size, vocabulary or weights) is refused before any question. Spec-Bench's EAGLE-2 defaults: --total-token 60 --depth 5 --top-k 10. Each answer's ``stats`` carry the drafted and accepted tokens.
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("eagle2", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
