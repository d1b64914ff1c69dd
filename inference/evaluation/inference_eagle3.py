"""EAGLE-3: a head over a fusion of the target's low, middle and high layers (trained with
training-time test) drafts EAGLE-2's dynamic tree (expanded by path probability, reranked).

    python -m evaluation.inference_eagle3 --ea-model-path models/eagle3-smollm2-135m --model-id smollm2-eagle3

The head (``python -m sd2train.eagle3``) must have been trained for this target: one for another
target (hidden size, vocabulary, depth or weights) is refused before any question. Spec-Bench's
EAGLE-3 defaults (EAGLE-3's own): --total-token 60 --depth 7 --top-k 10. Each answer's ``stats`` carry the drafted
and accepted tokens.
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("eagle3", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
