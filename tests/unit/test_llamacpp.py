"""ar_llamacpp: refused with a clear message without llama-cpp-python; a real greedy run on the
default target's GGUF when it is installed (pip install -e .[llamacpp])."""
from __future__ import annotations

import sys

import pytest

from evaluation.methods import REGISTRY, check_method_args, parser_for


def test_absent_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as if not installed
    method = REGISTRY["ar_llamacpp"]
    args = parser_for(method).parse_args(["--model-id", "x"])
    with pytest.raises(ValueError, match=r"llama-cpp-python, which is not installed: pip install -e \.\[llamacpp\]"):
        check_method_args(method, args)


def test_cli_reports_the_absent_package(monkeypatch, capsys):
    from evaluation.eval import run_cli
    from evaluation.inference_ar_llamacpp import main

    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    monkeypatch.setattr(sys, "argv", ["inference_ar_llamacpp", "--model-id", "x"])
    with pytest.raises(SystemExit) as exit_:
        run_cli(main)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("error: ar_llamacpp needs llama-cpp-python")


@pytest.mark.integration
def test_llamacpp_decodes_the_default_gguf_greedily():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e .[llamacpp])")
    from transformers import AutoTokenizer

    from evaluation.llamacpp_reference import llamacpp_forward
    from sd2.paths import DEFAULT_MODEL_DIR, default_gguf

    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Name three colours."}],
                                         add_generation_prompt=True, tokenize=False)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    forward = llamacpp_forward(default_gguf(), 512, 2)
    first, again = forward(prompt, 12, {tokenizer.eos_token_id}), forward(prompt, 12, {tokenizer.eos_token_id})
    assert 1 <= first.new_tokens <= 12 and first.accept_lengths == [1] * first.new_tokens
    assert first.token_ids == again.token_ids  # greedy and reset between questions
    assert tokenizer.decode(first.token_ids, skip_special_tokens=True).strip()
