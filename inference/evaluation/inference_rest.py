"""REST (retrieval-based speculative decoding) on the shared engine.

    python scripts/build_rest_datastore.py            # once: models/rest/sharegpt-smollm2.npz
    python -m evaluation.inference_rest --model-id smollm2-rest-float32 [--datastore-path P --num-draft 64 --max-token-span 16]
"""
from __future__ import annotations

from evaluation.eval import run_cli
from evaluation.methods import run_method


def main(argv=None):
    return run_method("rest", argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
