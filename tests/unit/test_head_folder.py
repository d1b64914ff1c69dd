"""sd2.weight_files.head_entry: every saved head folder (EAGLE, EAGLE-3, Medusa/Hydra) is checked
the same way before anything loads, each problem named."""
from __future__ import annotations

import json

import pytest

from sd2.weight_files import head_entry


def head_folder(tmp_path, config, weights=True):
    (tmp_path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if weights:
        (tmp_path / "model.safetensors").write_bytes(b"")
    return tmp_path


def test_the_entry_of_a_complete_folder(tmp_path):
    folder = head_folder(tmp_path, {"hidden_size": 8, "sd2_eagle": {"target": "t"}})
    assert head_entry(folder, "sd2_eagle", "an EAGLE head") == {"target": "t"}


@pytest.mark.parametrize("config, weights, message", [
    (None, True, r"is not an EAGLE head \(config.json missing\)"),
    ('{"sd2_eagle": ', True, r"config.json is not a JSON object \(damaged or cut off\)"),
    ("[1, 2]", True, r"config.json is not a JSON object"),
    ({"hidden_size": 8}, True, r"is not an EAGLE head \(no sd2_eagle entry in its config.json\)$"),
    ({"sd2_eagle3": {"target": "t"}}, True, r"no sd2_eagle entry in its config.json\) \(an EAGLE-3 head\)"),
    ({"sd2_eagle": {"target": "t"}}, False, r"the head's weights \(model.safetensors\) are missing"),
])
def test_each_problem_is_named(tmp_path, config, weights, message):
    if config is not None:
        head_folder(tmp_path, config, weights)
    with pytest.raises(ValueError, match=message):
        head_entry(tmp_path, "sd2_eagle", "an EAGLE head", {"sd2_eagle3": "an EAGLE-3 head"})
