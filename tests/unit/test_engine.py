"""The model runner and KV cache against the framework's own forward, and the engine's AR decoding."""
from __future__ import annotations

import pytest
import torch

from specdec.engine import SpeculativeEngine
from specdec.kv_cache import KVCache
from specdec.llama import LlamaRunner, causal_mask
from specdec.tree import ancestor_mask, depths

from helpers import tiny_llama

TOL = dict(atol=2e-5, rtol=1e-4)


def tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    config = Qwen2Config(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=256,
                         tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # random init leaves the q/k/v biases at zero; make them matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    return model


def tiny_mistral():
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(2)
    config = MistralConfig(vocab_size=80, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                           sliding_window=None)
    return MistralForCausalLM(config).eval()


MODELS = {
    "llama_gqa_tied": lambda: tiny_llama(),
    "llama3_rope_scaling": lambda: tiny_llama(seed=3, rope_parameters={
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "qwen2_qkv_bias": tiny_qwen2,
    "mistral_mha": tiny_mistral,
}


@pytest.fixture(params=sorted(MODELS))
def model(request):
    return MODELS[request.param]()


@torch.no_grad()
def hf_logits(model, ids: list[int]) -> torch.Tensor:
    return model(torch.tensor([ids])).logits[0]


@torch.inference_mode()
@pytest.mark.parametrize("linear", ["torch", "weight_left"])
def test_prefill_and_decode_match_hf(model, linear):
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (24,))
    expected = hf_logits(model, ids.tolist())
    runner = LlamaRunner(model, linear=linear)
    cache = runner.new_cache(32)
    got = [runner.forward(ids[:16], cache, torch.arange(16), causal_mask(16, 0, "cpu"))]
    for i in range(16, 24):  # one token at a time, as AR decoding does
        got.append(runner.forward(ids[i:i + 1], cache, torch.tensor([i]), None))
    torch.testing.assert_close(torch.cat(got), expected, **TOL)
    assert cache.lengths == [24] * runner.num_layers


@torch.inference_mode()
@pytest.mark.parametrize("linear", ["torch", "weight_left"])
def test_tree_logits_equal_chain_logits_along_each_path(model, linear):
    torch.manual_seed(0)
    vocab = model.config.vocab_size
    prefix = torch.randint(0, vocab, (10,))
    parents = [-1, -1, 0, 0, 1, 2, 2, 4, -1, 7]
    nodes = torch.randint(0, vocab, (len(parents),))
    runner = LlamaRunner(model, linear=linear)
    cache = runner.new_cache(32)
    runner.forward(prefix, cache, torch.arange(10), causal_mask(10, 0, "cpu"), logits=False)
    mask = torch.cat((torch.ones(len(parents), 10, dtype=torch.bool), ancestor_mask(parents)), 1)[None, None]
    positions = torch.tensor([10 + d - 1 for d in depths(parents)])
    tree_logits = runner.forward(nodes, cache, positions, mask)
    for i in range(len(parents)):
        path, node = [], i
        while node >= 0:
            path.insert(0, int(nodes[node]))
            node = parents[node]
        chain = hf_logits(model, prefix.tolist() + path)[-1]
        torch.testing.assert_close(tree_logits[i], chain, **TOL)


def test_linear_mode_is_chosen_per_device_and_dtype():
    from specdec.llama import linear_for

    assert linear_for(torch.device("cpu"), torch.float32) is not torch.nn.functional.linear
    assert linear_for(torch.device("cpu"), torch.bfloat16) is torch.nn.functional.linear
    x, w, b = torch.randn(3, 5, 8), torch.randn(6, 8), torch.randn(6)
    for rows in (x[:1, :1], x):  # one row (padded to two columns inside) and several
        torch.testing.assert_close(linear_for(torch.device("cpu"), torch.float32, "weight_left")(rows, w, b),
                                   torch.nn.functional.linear(rows, w, b))
    for n in range(1, 18):  # every padded row count (1, 3, 10-15) and the ones around them
        rows = torch.randn(1, n, 8)
        out = linear_for(torch.device("cpu"), torch.float32, "weight_left")(rows, w, b)
        assert out.shape == (1, n, 6)
        torch.testing.assert_close(out, torch.nn.functional.linear(rows, w, b))
    with pytest.raises(ValueError, match="linear mode"):
        linear_for(torch.device("cpu"), torch.float32, "fast")


@torch.inference_mode()
def test_compaction_keeps_chosen_rows_and_matches_a_fresh_chain():
    model = tiny_llama()
    runner = LlamaRunner(model)
    torch.manual_seed(0)
    prefix = torch.randint(0, 128, (6,))
    parents = [-1, -1, 0, 1, 2]
    nodes = torch.randint(0, 128, (5,))
    cache = runner.new_cache(32)
    runner.forward(prefix, cache, torch.arange(6), causal_mask(6, 0, "cpu"), logits=False)
    mask = torch.cat((torch.ones(5, 6, dtype=torch.bool), ancestor_mask(parents)), 1)[None, None]
    runner.forward(nodes, cache, torch.tensor([6 + d - 1 for d in depths(parents)]), mask, logits=False)
    before_k = cache.k[:, :, [6 + 0, 6 + 2, 6 + 4]].clone()
    cache.keep(torch.tensor([6 + 0, 6 + 2, 6 + 4]), 6)  # the path 0 -> 2 -> 4
    assert cache.lengths == [9] * 4
    torch.testing.assert_close(cache.k[:, :, 6:9], before_k)
    # Decoding on after compaction equals the framework's forward over prefix + path.
    nxt = torch.tensor([5])
    got = runner.forward(nxt, cache, torch.tensor([9]), None)[0]
    expected = hf_logits(model, prefix.tolist() + nodes[[0, 2, 4]].tolist() + [5])[-1]
    torch.testing.assert_close(got, expected, **TOL)


def test_per_layer_lengths_crop_and_keep():
    cache = KVCache(num_layers=3, num_kv_heads=1, head_dim=2, max_len=16, dtype=torch.float32, device="cpu")
    for layer, n in enumerate((10, 7, 4)):  # deeper layers lag behind, as after early exits
        cache.append(layer, torch.arange(n * 2.0).view(1, 1, n, 2) + 100 * layer, torch.zeros(1, 1, n, 2))
    assert cache.lengths == [10, 7, 4]
    cache.keep(torch.tensor([5, 6, 8]), 5)  # rows 5, 6 exist in layers 0-1, row 8 only in layer 0
    assert cache.lengths == [8, 7, 4]
    assert cache.k[0, 0, 7].tolist() == [16.0, 17.0]  # row 8 moved to slot 7
    cache.crop(5)
    assert cache.lengths == [5, 5, 4]
    with pytest.raises(RuntimeError, match="KV cache full"):
        cache.append(2, torch.zeros(1, 1, 13, 2), torch.zeros(1, 1, 13, 2))


def test_ar_engine_equals_hf_greedy_generate():
    model = tiny_llama(vocab_size=64)
    torch.manual_seed(0)
    prompt = torch.randint(0, 64, (12,)).tolist()
    out = SpeculativeEngine(model).generate(prompt, 20, set())
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                             attention_mask=torch.ones(1, 12, dtype=torch.long), pad_token_id=0)
    assert out.token_ids == ref[0, 12:].tolist()
    assert out.decoding_steps == 20 and out.accept_lengths == [1] * 20


def test_stop_token_and_max_new_tokens_end_generation():
    model = tiny_llama(vocab_size=64)
    engine = SpeculativeEngine(model)
    full = engine.generate([3, 4, 5], 12, set()).token_ids
    stop = full[4]
    first = full.index(stop)
    out = engine.generate([3, 4, 5], 12, {stop})
    assert out.token_ids == full[:first + 1]
    assert sum(out.accept_lengths) == out.new_tokens


def test_bad_input_is_rejected_before_generation():
    model = tiny_llama()
    engine = SpeculativeEngine(model)
    with pytest.raises(ValueError, match="does not fit the context"):
        engine.generate(list(range(100)) * 6, 4, set())
    with pytest.raises(ValueError, match="empty prompt"):
        engine.generate([], 4, set())
    with pytest.raises(ValueError, match="temperature"):
        SpeculativeEngine(model, temperature=-1)
