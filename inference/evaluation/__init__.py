"""Spec-Bench-style evaluation: inference_*.py per method, eval.py shared, speed.py, equal.py."""
