"""scripts/pass_costs.py's machine limit: the bytes a pass must read, counted from the model."""
import sys
from pathlib import Path

import torch

from helpers import tiny_llama

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import pass_costs  # noqa: E402


def test_pass_bytes_counts_every_layer_the_head_once_and_the_cached_kv():
    model = tiny_llama(num_layers=3, vocab_size=128, hidden=64)  # tied: the head is the embedding
    config = model.config
    layer = sum(p.numel() for p in model.model.layers[0].parameters())
    head_dim = config.hidden_size // config.num_attention_heads
    kv_per_row = 2 * 3 * config.num_key_value_heads * head_dim
    expected = 4 * (3 * layer + config.hidden_size + 128 * 64 + kv_per_row * (pass_costs.PAST + 2))
    assert pass_costs.pass_bytes(model, rows=2) == expected
    assert pass_costs.pass_bytes(model.to(torch.bfloat16), rows=2) == expected // 2


def test_limit_table_puts_each_cost_beside_its_bytes_over_the_bandwidth():
    model = tiny_llama(num_layers=2)
    costs = {n: 1e-3 for n in pass_costs.LIMIT_ROWS}  # 1 ms each
    bandwidth = pass_costs.pass_bytes(model, 1) / 0.5e-3  # reads one row's bytes in 0.5 ms
    lines = pass_costs.limit_table(model, costs, bandwidth)
    assert len(lines) == 2 + len(pass_costs.LIMIT_ROWS)
    assert lines[2].startswith("| 1 | 1.0 |") and lines[2].endswith("| 0.5 | 50% |")


def test_read_bandwidth_is_a_positive_rate():
    assert pass_costs.read_bandwidth(1 << 20, repeats=1) > 0
