"""SD2: a sorted draft with adaptive exits, drafting a chain or (``--tree``) a dynamic tree.

    python -m evaluation.inference_sd2 --drafter-path models/sd2-draft-soft-12 --model-id smollm2-sd2-chain
    python -m evaluation.inference_sd2 --drafter-path models/sd2-draft-soft-12 --model-id smollm2-sd2-tree \\
        --tree --total-token auto --depth 4 --top-k 10

Exits and thresholds default to the draft's spec (``config.sd2``, ``sd2.draft_spec``); new
exits without thresholds get the default ones; the draft's reduced head (``draft_vocab_file``) is
used when present.
Each answer's ``stats`` carry ``exit_tokens`` (drafted tokens per exit), ``exit_accepted`` and
the time split (draft / verify / other).
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("sd2", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
