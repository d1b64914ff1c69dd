"""EAGLE: a one-layer head over the target's own features drafts a static tree.

    python -m evaluation.inference_eagle --ea-model-path models/eagle-smollm2-135m --model-id smollm2-eagle

The head (``python -m sd2train.eagle``) must have been trained for this target: one for another
target (hidden size, vocabulary or weights) is refused before any question. The static tree keeps
the --total-token likeliest rank paths by the head's measured acceptance per rank (its held-out
report, or --rank-accuracy). Each answer's ``stats`` carry the drafted and accepted tokens.
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("eagle", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
