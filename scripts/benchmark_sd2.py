"""Deprecated name of scripts/benchmark_methods.py (it benchmarks every method, not SD2 alone):
forwards to it. Old spellings are translated: ``--draft-dtype`` (SD2's draft) is
``--sd2-draft-dtype``; in ``--methods``, ``hf`` is the ``ar_hf`` preset and ``sd2_tree`` (the
auto-sized tree) ``sd2_tree_auto`` (``sd2_tree`` is now eval.sh's 3-node tree; docs/presets.md).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_methods  # noqa: E402
from evaluation.eval import run_cli  # noqa: E402

OLD_PRESETS = {"hf": "ar_hf", "sd2_tree": "sd2_tree_auto"}


def translate(argv: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        flag, _, inline = argv[i].partition("=")
        value = inline if inline else (argv[i + 1] if i + 1 < len(argv) else None)
        step = 1 if inline else 2
        if flag == "--draft-dtype" and value is not None:
            out += ["--sd2-draft-dtype", value]
        elif flag == "--methods" and value is not None:
            out += ["--presets", ",".join(OLD_PRESETS.get(m, m) for m in value.split(","))]
        else:
            out.append(argv[i])
            step = 1
        i += step
    return out


def main(argv=None):
    print("note: scripts/benchmark_sd2.py is now scripts/benchmark_methods.py (this name forwards to it)",
          file=sys.stderr)
    return benchmark_methods.main(translate(sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    run_cli(lambda: sys.exit(0 if main() else 1))
