"""Whether bfloat16 arithmetic is fast on a device, so defaults follow the machine.

On a CPU with AMX or AVX-512 BF16 tiles a bfloat16 pass of the default target is the fastest; on an
AVX2-only CPU (no native bfloat16) torch converts every operand and the same pass runs about 3.4x
slower than float32 (a 32 x 64-token prefill of SmolLM2-135M, one thread, measured back to back).
Defaults that said "bfloat16" (reply generation, the CPU training recipes) ask here instead.

    python -m sd2.hardware [cpu|cuda]      # prints bfloat16 or float32: the faster dtype there
"""
from __future__ import annotations

import sys
from pathlib import Path

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    return set(line.partition(":")[2].split())


def fast_bfloat16(device: str = "cpu") -> bool:
    """True where bfloat16 matmuls run natively: a CUDA device that supports them, or a CPU with
    AMX / AVX-512 BF16 (read from /proc/cpuinfo; elsewhere, e.g. macOS, assumed not)."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return any(flag in cpu_flags() for flag in CPU_BF16_FLAGS)


def fast_dtype_name(device: str = "cpu") -> str:
    """The faster of bfloat16 and float32 on ``device``, by name."""
    return "bfloat16" if fast_bfloat16(device) else "float32"


if __name__ == "__main__":
    print(fast_dtype_name(sys.argv[1] if len(sys.argv) > 1 else "cpu"))
