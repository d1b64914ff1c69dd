"""The prepared default checkpoint is the GGUF model, as an ordinary HF checkpoint."""
import pytest
import torch

from sd2 import paths
from sd2train.default_model import CHECK_MESSAGES, check_prompt_ids, is_prepared


def greedy(model, ids, n=24):
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, attention_mask=torch.ones_like(ids))
    return out[0, ids.shape[1]:].tolist()


def test_prepared_checkpoint_answers_like_the_gguf_model(default_target):
    from transformers import AutoModelForCausalLM

    model, tokenizer = default_target
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    gguf = paths.default_gguf()
    assert is_prepared(paths.DEFAULT_MODEL_DIR, gguf)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = check_prompt_ids(tokenizer)
    answer = greedy(model, ids)
    assert answer == greedy(gguf_model, ids)
    assert "Paris" in tokenizer.decode(answer), (CHECK_MESSAGES, tokenizer.decode(answer))


def test_missing_package_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="not-a-package.*not installed"):
        paths.package_dir("sd2_no_such_package", "not-a-package")


def test_is_prepared_rejects_an_empty_folder(tmp_path):
    assert not is_prepared(tmp_path, paths.default_gguf())
