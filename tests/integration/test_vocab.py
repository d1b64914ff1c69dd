"""The single draft/target vocabulary check and draft loading: mismatches are refused, by name,
before any draft weights are read."""
import pytest
from transformers import AutoTokenizer

from sd2.paths import DEFAULT_MODEL_DIR
from specdec.drafters.sd2 import load_sd2_drafter
from specdec.vocab import VocabularyMismatch, check_same_vocabulary, load_draft

from helpers import tiny_llama


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    return AutoTokenizer.from_pretrained(default_model_dir)


def test_same_vocabulary_passes_and_every_mismatch_is_named(tokenizer):
    check_same_vocabulary(49152, 49152, tokenizer, tokenizer)
    check_same_vocabulary(49152, 49152)  # a draft saved without tokenizer files: sizes only
    with pytest.raises(VocabularyMismatch, match=r"draft vocabulary \(128 tokens\) differs from the target's \(49152"):
        check_same_vocabulary(49152, 128, tokenizer, tokenizer)
    with pytest.raises(VocabularyMismatch, match="no vocab_size"):
        check_same_vocabulary(49152, None)
    other = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    other.add_tokens(["<draft-only-token>"])
    with pytest.raises(VocabularyMismatch, match="tokenizers differ"):
        check_same_vocabulary(49152, 49152, tokenizer, other)


def config_only_checkpoint(tmp_path, **kwargs):
    """A draft folder with config.json and no weights: any check that passes would fail on loading."""
    tiny_llama(**kwargs).config.save_pretrained(tmp_path)
    return tmp_path


def test_load_draft_refuses_before_reading_weights(tmp_path):
    target = tiny_llama(vocab_size=128)
    with pytest.raises(ValueError, match="no draft checkpoint"):
        load_draft(tmp_path / "missing", target)
    with pytest.raises(VocabularyMismatch, match=r"\(80 tokens\) differs"):
        load_draft(config_only_checkpoint(tmp_path, vocab_size=80), target)


def test_load_draft_loads_a_matching_checkpoint_in_the_targets_dtype(tmp_path):
    target = tiny_llama(vocab_size=128).bfloat16()
    tiny_llama(num_layers=2, vocab_size=128).save_pretrained(tmp_path)
    draft, config = load_draft(tmp_path, target)
    assert config.num_hidden_layers == 2 and draft.dtype == target.dtype and not draft.training


def test_sd2_exits_are_checked_before_weights(tmp_path):
    target = tiny_llama(vocab_size=128)
    with pytest.raises(ValueError, match="exit 6 is deeper than the draft, which has 4 layers"):
        load_sd2_drafter(config_only_checkpoint(tmp_path), target, exits=[2, 6], thresholds=[0.5, 0.0])
    with pytest.raises(ValueError, match="2 thresholds for 3 exits"):
        load_sd2_drafter(tmp_path, target, exits=[1, 2, 4], thresholds=[0.5, 0.0])
