"""Spec-Bench's tasks: what both the harness's reports and the trainer's exit report group by."""
from __future__ import annotations

# Spec-Bench's six tasks; MT-bench is its eight categories taken together.
MT_BENCH_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
TASKS = ("mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag")


def task_of(category: str) -> str:
    return "mt_bench" if category in MT_BENCH_CATEGORIES else category
