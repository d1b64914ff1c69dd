"""The draft spec (config.sd2) that training writes and inference reads: one set of defaults,
one validation, one vocabulary loader."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import torch

from sd2.draft_spec import DraftSpec, default_exits, drafts_at


def config(num_layers, sd2=None):
    return SimpleNamespace(num_hidden_layers=num_layers, sd2=sd2)


@pytest.mark.parametrize("layers, exits", [(12, [6, 9, 12]), (4, [2, 3, 4]), (2, [1, 2]), (1, [1])])
def test_default_exits_follow_the_drafts_depth(layers, exits):
    assert default_exits(layers) == exits
    spec = DraftSpec.from_config(config(layers))  # a config without sd2: the defaults for its depth
    assert spec.exits == exits and spec.thresholds == [0.5] * (len(exits) - 1) + [0.0]


def test_the_checkpoint_spec_and_overrides():
    stored = {"exits": [2, 4], "thresholds": [0.4, 0.0], "target": "t", "target_num_hidden_layers": 8,
              "draft_vocab_file": None}
    spec = DraftSpec.from_config(config(4, stored))
    assert spec.to_config() == stored
    assert DraftSpec.from_config(config(4, stored), thresholds=[0.9, 0.0]).thresholds == [0.9, 0.0]
    # other exits without thresholds get the default thresholds (not the checkpoint's, made for other exits)
    other = DraftSpec.from_config(config(4, stored), exits=[1, 3, 4])
    assert other.exits == [1, 3, 4] and other.thresholds == [0.5, 0.5, 0.0] and other.target == "t"


@pytest.mark.parametrize("exits, thresholds, message", [
    ([2, 1, 4], None, "strictly increasing"),
    ([0, 4], None, ">= 1"),
    ([1, 2, 6], None, "exit 6 is deeper than the draft, which has 4 layers"),
    ([1, 2, 4], [0.5, 0.0], "2 thresholds for 3 exits"),
    ([1, 2, 4], [0.5, 0.5, 0.2], "last threshold must be 0"),
    ([1, 4], [1.5, 0.0], r"lie in \[0, 1\]"),
])
def test_bad_exits_and_thresholds_are_named(exits, thresholds, message):
    with pytest.raises(ValueError, match=message):
        DraftSpec.from_config(config(4), exits, thresholds)


def test_the_draft_vocabulary(tmp_path):
    spec = DraftSpec([2, 4], draft_vocab_file="draft_vocab.json")
    with pytest.raises(ValueError, match="draft_vocab.json, which does not exist"):
        spec.load_vocab(tmp_path)
    (tmp_path / "draft_vocab.json").write_text(json.dumps([5, 3, 9, 1]))
    assert spec.load_vocab(tmp_path) == [5, 3, 9, 1] and spec.load_vocab(tmp_path, 2) == [5, 3]
    with pytest.raises(ValueError, match="size 5 exceeds the draft vocabulary"):
        spec.load_vocab(tmp_path, 5)
    assert DraftSpec([2, 4]).load_vocab(tmp_path) is None


def test_the_exit_rule_is_a_top1_probability_above_the_threshold():
    # Strictly above: a token exactly as sure as the threshold goes deeper; the last exit's 0 takes any token.
    assert drafts_at(0.71, 0.7) and not drafts_at(0.7, 0.7) and drafts_at(1 / 49152, 0.0)
    assert drafts_at(torch.tensor([0.9, 0.7, 0.2]), 0.7).tolist() == [True, False, False]
