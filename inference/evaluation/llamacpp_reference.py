"""llama.cpp as an outside CPU reference: the default target's own GGUF (Q4_1) decoded by llama.cpp
through llama-cpp-python, on the same prompts (the harness's chat template) and stop tokens.

Optional: ``pip install -e .[llamacpp]`` (pyproject.toml's extra; it compiles llama.cpp from PyPI's
source package, which takes many minutes, so scripts/setup.sh does not install it). Without the
package the method ends with one ``error:`` line saying so.

Its answers are not expected to equal the engine's: llama.cpp computes in 4-bit weights, the engine
in the de-quantised float32 (or bfloat16) checkpoint; ``equal.py`` counts the equal answers per task.
``decoding_steps`` is one per token (plain decoding).
"""
from __future__ import annotations

from specdec.types import GenerationOutput


def require_llama_cpp():
    """The ``llama_cpp`` module, or a ValueError naming the extra to install."""
    try:
        import llama_cpp
    except ImportError:
        raise ValueError("ar_llamacpp needs llama-cpp-python, which is not installed: "
                         "pip install -e .[llamacpp] (builds llama.cpp from source)") from None
    return llama_cpp


def llamacpp_forward(gguf_path: str, context: int, threads: int, seed: int = 0):
    """A greedy ``forward(prompt_ids, max_new_tokens, stop_token_ids)`` over llama.cpp."""
    llama_cpp = require_llama_cpp()
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=context, n_threads=threads, n_threads_batch=threads,
                          seed=seed, verbose=False)

    def forward(prompt_ids: list[int], max_new_tokens: int, stop_token_ids: set[int]) -> GenerationOutput:
        tokens: list[int] = []
        llm.reset()  # every question from an empty cache, as the engine does
        for token in llm.generate(prompt_ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                  reset=True):
            tokens.append(int(token))
            if token in stop_token_ids or len(tokens) >= max_new_tokens:
                break
        return GenerationOutput(tokens, len(tokens), [1] * len(tokens), {})

    return forward
