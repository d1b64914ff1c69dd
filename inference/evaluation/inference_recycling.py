"""Token Recycling on the shared engine (no draft model, no datastore).

    python -m evaluation.inference_recycling --model-id smollm2-recycling-float32 [--output-id-topk 8 \\
        --tree-version 2.2.2 --total-token auto --warm-matrix]

The matrix starts empty for every question (answers do not depend on question order);
``--warm-matrix`` keeps it across questions as Spec-Bench's implementation does.
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("recycling", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
