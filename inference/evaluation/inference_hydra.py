"""Hydra: sequentially dependent draft heads (each reads the tokens drafted before it) draft a tree.

    python -m evaluation.inference_hydra --hydra-model-path models/hydra-smollm2-135m --model-id smollm2-hydra

The heads (``python -m sd2train.heads --kind hydra``) must have been trained for this target; others
are refused before any question. The static tree keeps the --total-token likeliest rank paths by
each head's measured top-k accuracy (``heads_quality.json`` beside the heads). Verification is the
shared engine's (greedy, or lossless rejection sampling; Medusa's typical acceptance is not offered).
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("hydra", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
