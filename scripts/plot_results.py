"""Plots from answer files: speed-up per task per method (bars, τ on top) and SD2's exit usage;
optionally the same numbers as a Markdown table with the equality counts.

    python scripts/plot_results.py --base-path data/spec_bench/model_answer/ar.jsonl \
        --method "SD2 tree=data/spec_bench/model_answer/sd2-tree.jsonl" --method "PLD=...pld.jsonl" \
        --out-dir assets [--table results.md]

Speed-ups and τ come from evaluation/speed.py and equality from evaluation/equal.py (one place for
each); exit usage from the ``stats[*].exit_tokens`` that SD2 records per turn.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from evaluation.answers import load_answer_file  # noqa: E402
from evaluation.equal import compare_files  # noqa: E402
from evaluation.questions import report_tasks, task_of  # noqa: E402
from evaluation.speed import speed_report  # noqa: E402


def parse_method(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--method wants NAME=PATH, got {text!r}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"answer file not found: {path}")
    return name, path


def plot_speedups(methods, base_path, out: Path, title: str) -> dict:
    summaries = {name: speed_report([path], [base_path])["summary"] for name, path in methods}
    tasks = [t for t in next(iter(summaries.values())) if all(t in s for s in summaries.values())]
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(min(16, max(8, 0.3 * len(tasks) * len(methods) + 2)), 5))
    for i, (name, summary) in enumerate(summaries.items()):
        xs = [t + (i - (len(methods) - 1) / 2) * width for t in range(len(tasks))]
        ys = [summary[t]["speedup"]["mean"] for t in tasks]
        bars = ax.bar(xs, ys, width, label=name)
        for bar, task in zip(bars, tasks):
            ax.annotate(f"τ{summary[task]['tau']['mean']:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=6)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("speed-up over AR (tok/s ratio)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=min(len(methods), 4))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return {name: {t: s[t]["speedup"]["mean"] for t in tasks} for name, s in summaries.items()}


def markdown_table(methods, base_path) -> str:
    """| method | speed-up (τ) per task … | overall | tok/s | = AR |, AR's own row first."""
    summaries = {name: speed_report([path], [base_path])["summary"] for name, path in methods}
    tasks = [t for t in next(iter(summaries.values())) if all(t in s for s in summaries.values())]
    first = next(iter(summaries.values()))
    lines = ["| method | " + " | ".join(tasks) + " | tok/s | = AR |", "|---" * (len(tasks) + 3) + "|",
             "| AR (engine) | " + " | ".join("1.00× (1.00)" for _ in tasks)
             + f" | {first['overall']['tok_s_base']['mean']:.1f} | — |"]
    for name, path in methods:
        summary = summaries[name]
        equal = compare_files(Path(base_path), Path(path))["tasks"]["overall"]
        compared = equal["equal"] + equal["different"]
        cells = [f"{summary[t]['speedup']['mean']:.2f}× ({summary[t]['tau']['mean']:.2f})" for t in tasks]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {summary['overall']['tok_s']['mean']:.1f} | {equal['equal']}/{compared} |")
    return "\n".join(lines) + "\n"


def exit_usage(path: str) -> dict[str, Counter]:
    """task -> Counter(exit -> drafted tokens), from SD2's per-turn stats."""
    usage: dict[str, Counter] = {}
    for record in load_answer_file(path).values():
        for turn_stats in record["choices"][0].get("stats", []):
            for exit_layer, count in (turn_stats or {}).get("exit_tokens", {}).items():
                usage.setdefault(task_of(record["category"]), Counter())[int(exit_layer)] += count
    return usage


def plot_exit_usage(name: str, path: str, out: Path) -> dict | None:
    usage = exit_usage(path)
    if not usage:
        return None
    tasks = [t for t in report_tasks(usage) if t in usage]
    exits = sorted({e for c in usage.values() for e in c})
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(tasks)
    for exit_layer in exits:
        shares = [usage[t][exit_layer] / max(sum(usage[t].values()), 1) for t in tasks]
        ax.bar(range(len(tasks)), shares, bottom=bottom, label=f"exit {exit_layer}")
        bottom = [b + s for b, s in zip(bottom, shares)]
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("share of drafted tokens")
    ax.set_title(f"{name}: which exit drafted the tokens")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return {t: dict(sorted(usage[t].items())) for t in tasks}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-path", required=True, help="the AR baseline's answer file")
    parser.add_argument("--method", type=parse_method, action="append", required=True, help="NAME=answer file")
    parser.add_argument("--out-dir", type=Path, default=Path("assets"))
    parser.add_argument("--title", default="Spec-Bench speed-up over AR on the same engine")
    parser.add_argument("--table", type=Path, default=None, help="also write the numbers as a Markdown table here")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    written = {"speedup": plot_speedups(args.method, args.base_path, args.out_dir / "speedup.png", args.title)}
    for name, path in args.method:
        slug = "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")
        usage = plot_exit_usage(name, path, args.out_dir / f"exit_usage_{slug}.png")
        if usage:
            written[f"exit_usage_{slug}"] = usage
    (args.out_dir / "plot_data.json").write_text(json.dumps(written, indent=2))
    if args.table:
        args.table.write_text(markdown_table(args.method, args.base_path))
        print(f"[plots] wrote the table {args.table}")
    print(f"[plots] wrote {', '.join(sorted(p.name for p in args.out_dir.glob('*.png')))} in {args.out_dir}")


if __name__ == "__main__":
    main()
