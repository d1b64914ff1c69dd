"""One speculative-decoding engine shared by every method.

The engine (``engine.py``) owns the target model, its KV cache, the verification pass (a chain
is a tree with one branch), greedy and sampling acceptance, cache compaction, stop conditions and
the per-step accounting. Each method is a *drafter* (``drafters/``): it proposes a ``DraftTree``
and is told what was accepted. AR proposes nothing.
"""
