"""Defaults that follow the machine: bfloat16 only where it is native, and a resumed replies file
keeps the dtype it was written in whatever machine resumes it."""
from __future__ import annotations

import json

import pytest

from sd2 import hardware
from sd2train.generate_replies import default_dtype, meta_path


@pytest.mark.parametrize("flags, want", [
    ({"avx2", "fma"}, "float32"),  # an AVX2-only CPU converts every bfloat16 operand
    ({"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),
    ({"avx2", "amx_tile", "amx_bf16"}, "bfloat16"),
    (set(), "float32"),  # unreadable /proc/cpuinfo: assume no native bfloat16
])
def test_the_cpu_dtype_follows_the_cpus_flags(monkeypatch, flags, want):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert hardware.fast_dtype_name("cpu") == want


def test_this_machines_cpuinfo_is_parsed():
    # every x86-64 or arm64 Linux lists its features; an empty set would silently mean float32
    assert hardware.cpu_flags() & {"sse2", "avx2", "fp", "asimd"}


def test_a_replies_file_resumes_in_its_own_dtype(tmp_path, monkeypatch):
    output = tmp_path / "replies.jsonl"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2"})
    monkeypatch.setattr("sd2train.generate_replies.fast_dtype_name", hardware.fast_dtype_name)
    assert default_dtype(output, "cpu") == "float32"  # a new file: the machine's faster dtype
    meta_path(output).write_text(json.dumps({"settings": {"dtype": "bfloat16"}}))
    assert default_dtype(output, "cpu") == "bfloat16"  # written on an AMX machine, resumed here
    meta_path(output).write_text("{not json")
    assert default_dtype(output, "cpu") == "float32"  # check_meta names the damaged file
