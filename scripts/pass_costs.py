"""What a target pass costs on this machine, by row count, and what starting it at layer K would save.

    .venv/bin/python scripts/pass_costs.py [--model-path models/smollm2-135m-instruct] [--dtype float32]

Prints (1) the engine's verification cost for 1-16, 24 and 32 rows after 256 cached rows (best of
several runs; ``SpeculativeEngine.time_verification``, padded products included), and (2) a 1- and a
4-row pass through all layers + head against the same pass started at layer 3 and at layer 6,
interleaved: the most a reuse of a frozen draft's first layers (Kangaroo, LayerSkip) could save.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "inference"))

from sd2.paths import DEFAULT_MODEL_DIR  # noqa: E402
from specdec.engine import SpeculativeEngine  # noqa: E402
from specdec.llama import LlamaRunner, causal_mask  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=getattr(torch, args.dtype)).eval()
    sizes = list(range(1, 17)) + [24, 32]
    runs = [SpeculativeEngine(model).time_verification(sizes, past=256, repeats=5) for _ in range(3)]
    print("pass cost (ms) by rows: " + "  ".join(f"{n}: {1000 * min(r[n] for r in runs):.1f}" for n in sizes))

    runner, past = LlamaRunner(model), 300
    cache = runner.new_cache(512)
    with torch.inference_mode():
        runner.run_layers(runner.embed(torch.randint(0, model.config.vocab_size, (past,))), cache,
                          range(runner.num_layers), torch.arange(past), causal_mask(past, 0, "cpu"))

        def seconds(n: int, first: int) -> float:
            cache.crop(past)
            start = time.perf_counter()
            h = runner.embed(torch.randint(0, model.config.vocab_size, (n,)))
            h = runner.run_layers(h, cache, range(first, runner.num_layers), torch.arange(past, past + n),
                                  None if n == 1 else causal_mask(n, past, "cpu"))
            runner.head(h)
            return time.perf_counter() - start

        for n in (1, 4):
            times = {first: [] for first in (0, 3, 6)}
            for _ in range(60):
                for first in times:  # interleaved
                    times[first].append(seconds(n, first))
            ms = {first: 1000 * statistics.median(t[10:]) for first, t in times.items()}
            print(f"{n} row(s): all layers + head {ms[0]:.2f} ms; from layer 3 {ms[3]:.2f} ms "
                  f"(-{100 * (1 - ms[3] / ms[0]):.1f}%); from layer 6 {ms[6]:.2f} ms (-{100 * (1 - ms[6] / ms[0]):.1f}%)")


if __name__ == "__main__":
    main()
