"""The one check that a draft speaks the target's vocabulary, and loading a draft checkpoint.

Every drafter that proposes token ids (SD2, SpS, HF assisted generation) exchanges ids with the
target, so the two output layers must be the same size and, where both tokenizers are known,
every token must map to the same id (and share EOS/BOS). The check reads only the config and the
tokenizer files, so a mismatch is reported before any weights are loaded.
"""
from __future__ import annotations

from pathlib import Path

import torch


class VocabularyMismatch(ValueError):
    """A draft whose token ids do not mean what the target's mean."""


def check_same_vocabulary(target_size: int, draft_size: int | None, target_tokenizer=None,
                          draft_tokenizer=None) -> None:
    """Raise VocabularyMismatch unless the output layers (``config.vocab_size``) and tokenizers agree."""
    if draft_size is None:
        raise VocabularyMismatch("the draft's config has no vocab_size")
    if draft_size != target_size:
        raise VocabularyMismatch(f"draft vocabulary ({draft_size} tokens) differs from the target's "
                                 f"({target_size} tokens): the draft must share the target's tokenizer")
    if target_tokenizer is None or draft_tokenizer is None:
        return  # a draft saved without tokenizer files: the sizes are all there is to compare
    target_vocab, draft_vocab = target_tokenizer.get_vocab(), draft_tokenizer.get_vocab()
    if target_vocab != draft_vocab:
        differing = sorted(set(target_vocab.items()) ^ set(draft_vocab.items()), key=lambda kv: kv[1])[:3]
        raise VocabularyMismatch(f"draft and target tokenizers differ ({len(draft_vocab)} vs {len(target_vocab)} "
                                 f"tokens; first differing (token, id): {differing})")
    for name in ("eos_token_id", "bos_token_id"):
        if getattr(target_tokenizer, name) != getattr(draft_tokenizer, name):
            raise VocabularyMismatch(f"draft and target tokenizers differ in {name}: "
                                     f"{getattr(draft_tokenizer, name)} vs {getattr(target_tokenizer, name)}")


def load_draft(path: str | Path, target: torch.nn.Module, target_tokenizer=None, dtype: torch.dtype | None = None,
               check_config=None):
    """A draft checkpoint (HF folder) on the target's device, in ``dtype`` (default: the target's).

    The vocabulary is checked, and ``check_config(config)`` run when given, before the weights load.
    Returns ``(model, config)``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"no draft checkpoint at {path} (config.json missing)")
    config = AutoConfig.from_pretrained(path)
    draft_tokenizer = None
    if target_tokenizer is not None and (path / "tokenizer_config.json").is_file():
        draft_tokenizer = AutoTokenizer.from_pretrained(path)
    check_same_vocabulary(target.config.vocab_size, getattr(config, "vocab_size", None), target_tokenizer,
                          draft_tokenizer)
    if check_config is not None:
        check_config(config)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or target.dtype).to(target.device).eval()
    return model, config
