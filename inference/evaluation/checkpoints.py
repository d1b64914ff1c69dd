"""What a checkpoint folder must hold, checked before anything loads: a target's or a draft's
config, weights and (for a target or a ``--tokenizer-path``) tokenizer files. A damaged or
incomplete folder is reported by name here, in seconds, instead of as the framework's guesses
(repo ids, tokenizer libraries, safetensors internals) after the target has loaded."""
from __future__ import annotations

import json
from pathlib import Path

from evaluation.errors import EvalConfigError
from sd2.weight_files import weights_problem

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def check_model_folder(path: Path, flag: str, tokenizer: bool = False) -> None:
    """A Hugging Face checkpoint folder: a readable ``config.json``, complete weights and, with
    ``tokenizer``, tokenizer files."""
    path = Path(path)
    if not path.exists():
        raise EvalConfigError(f"{flag} {path}: not found")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise EvalConfigError(f"{flag} {path}: not a model folder (no config.json)")
    read_json(path / "config.json", flag)
    check_weights(path, flag)
    if tokenizer:
        check_tokenizer_files(path, flag)


def read_json(file: Path, flag: str):
    try:
        return json.loads(file.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = f"{exc.msg}: line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise EvalConfigError(f"{flag}: {file} is not valid JSON ({detail}): the folder is damaged, save or copy "
                              "it again") from None


def check_weights(folder: Path, flag: str) -> None:
    """The folder's weight files exist and, for safetensors, are whole (``sd2.weight_files``: a
    truncated copy is caught from its header, without reading the tensors)."""
    problem = weights_problem(folder)
    if problem:
        raise EvalConfigError(f"{flag}: {problem}: save or copy it again")


def check_tokenizer_files(folder: Path, flag: str) -> None:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise EvalConfigError(f"{flag} {folder}: no tokenizer files (one of {', '.join(TOKENIZER_FILES)}): copy them "
                              "from the checkpoint the model came from, or save the tokenizer with the model")


def load_tokenizer(path: str | Path, flag: str):
    """The tokenizer in a local model folder, or an error naming the folder and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise EvalConfigError(f"{flag} {path}: not found (give a model folder holding the tokenizer, e.g. the target's)")
    if not path.is_dir():
        raise EvalConfigError(f"{flag} {path}: not a folder (give a model folder holding the tokenizer)")
    check_tokenizer_files(path, flag)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvalConfigError(f"{flag} {path}: its tokenizer does not load ({first_line})") from None
