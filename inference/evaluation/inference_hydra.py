"""Hydra: sequentially dependent draft heads (each reads the tokens drafted before it) draft a tree.

    python -m evaluation.inference_hydra --hydra-model-path models/hydra-smollm2-135m --model-id smollm2-hydra

Trained with ``python -m sd2train.heads --kind hydra``; loaded, checked and verified as Medusa's
heads are (``evaluation.inference_medusa``): refused before any question unless trained for this
target, a static tree from the heads' measured top-k accuracies, the shared engine's verification.
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("hydra", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
