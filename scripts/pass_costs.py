"""What a target pass costs on this machine, by row count, against the machine's limit, and what
starting it at layer K would save.

    .venv/bin/python scripts/pass_costs.py [--model-path models/smollm2-135m-instruct] [--dtypes float32,bfloat16]

Prints, per dtype, (1) the engine's verification cost for 1-16, 24 and 32 rows after 256 cached
rows (best of several runs; ``SpeculativeEngine.time_verification``, padded products included);
(2) at 1/2/4/8/16/32 rows the same cost beside the machine's limit: the bytes a pass must read (every
decoder layer's weights, the final norm and LM head, the cached keys and values) over the memory
bandwidth measured here and now (the best of several reads of a buffer four times the size of
the model, so no cache holds it); a pass at 100% of its limit cannot get faster without reading
fewer bytes (a smaller dtype, fewer layers); and (3) a 1- and a 4-row pass through all layers +
head against the same pass started at layer 3 and at layer 6, interleaved: the most a reuse of a
frozen draft's first layers (Kangaroo, LayerSkip) could save.
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

PAST = 256  # cached rows before every timed pass
LIMIT_ROWS = (1, 2, 4, 8, 16, 32)


def pass_bytes(model: torch.nn.Module, rows: int, past: int = PAST) -> int:
    """The bytes a pass of ``rows`` new rows after ``past`` cached ones must read at least: every
    decoder layer's weights, the final norm and the LM head (tied or not: the head reads the whole
    matrix, the embedding only ``rows`` of it), and every layer's cached keys and values."""
    def size(params):
        return sum(p.numel() * p.element_size() for p in params)

    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = model.lm_head.weight.element_size()
    kv = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * (past + rows) * element
    return size(model.model.layers.parameters()) + size(model.model.norm.parameters()) + size(
        model.lm_head.parameters()) + kv


def read_bandwidth(buffer_bytes: int, repeats: int = 5) -> float:
    """Bytes per second this machine reads from memory now: the best of ``repeats`` sums over a
    float32 buffer of ``buffer_bytes`` (with torch's threads, as a pass runs)."""
    buffer = torch.ones(buffer_bytes // 4, dtype=torch.float32)
    best = float("inf")
    for _ in range(repeats + 1):  # the first run warms up (pages, threads)
        start = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - start)
    return buffer.numel() * 4 / best


def limit_table(model: torch.nn.Module, costs: dict[int, float], bandwidth: float) -> list[str]:
    """Rows | measured ms | bytes read | limit ms (bytes / bandwidth) | measured share of the limit."""
    lines = [f"| rows | measured ms | MB read | limit ms at {bandwidth / 1e9:.1f} GB/s | limit / measured |",
             "|---|---|---|---|---|"]
    for n in LIMIT_ROWS:
        need = pass_bytes(model, n)
        limit = need / bandwidth
        lines.append(f"| {n} | {1000 * costs[n]:.1f} | {need / 1e6:.0f} | {1000 * limit:.1f} | "
                     f"{100 * limit / costs[n]:.0f}% |")
    return lines


def layer_start_savings(model: torch.nn.Module) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in ("float32", "bfloat16")]
    if bad or not dtypes:
        parser.error(f"--dtypes takes float32 and/or bfloat16, got {args.dtypes!r}")
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    sizes = list(range(1, 17)) + [24, 32]
    for dtype in dtypes:
        model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=getattr(torch, dtype)).eval()
        runs = [SpeculativeEngine(model).time_verification(sizes, past=PAST, repeats=5) for _ in range(3)]
        costs = {n: min(r[n] for r in runs) for n in sizes}
        print(f"\n{dtype}, {args.threads} thread(s): pass cost (ms) by rows after {PAST} cached: "
              + "  ".join(f"{n}: {1000 * costs[n]:.1f}" for n in sizes))
        bandwidth = read_bandwidth(4 * pass_bytes(model, 1))
        print("\n".join(limit_table(model, costs, bandwidth)))
        layer_start_savings(model)


if __name__ == "__main__":
    main()
