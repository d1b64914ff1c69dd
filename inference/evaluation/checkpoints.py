"""What a checkpoint folder must hold, checked before anything loads: a target's or a draft's
config, weights and (for a target or a ``--tokenizer-path``) tokenizer files. A damaged or
incomplete folder is reported by name here, in seconds, instead of as the framework's guesses
(repo ids, tokenizer libraries, safetensors internals) after the target has loaded."""
from __future__ import annotations

import json
from pathlib import Path

from evaluation.errors import EvalConfigError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # each may instead be sharded, with an index
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
    """The folder's weight files exist and, for safetensors, are whole (a truncated copy is caught
    from its header, without reading the tensors)."""
    for name in WEIGHT_FILES:
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set((read_json(index, flag).get("weight_map") or {}).values()))
            missing = [s for s in shards if not (folder / s).is_file()]
            if not shards or missing:
                raise EvalConfigError(f"{flag} {folder}: {index.name} names weight files that are missing: "
                                      f"{missing[:3] or 'none listed'}")
            for shard in shards:
                check_safetensors(folder / shard, flag)
            return
        if (folder / name).is_file():
            check_safetensors(folder / name, flag)
            return
    raise EvalConfigError(f"{flag} {folder}: no weights ({' or '.join(WEIGHT_FILES)}, or a sharded index)")


def check_safetensors(file: Path, flag: str) -> None:
    """A safetensors file whose header parses and whose tensors end where the file does."""
    if file.suffix != ".safetensors":
        return
    size = file.stat().st_size
    with file.open("rb") as f:
        head = f.read(8)
        header_size = int.from_bytes(head, "little") if len(head) == 8 else None
        header = None
        if header_size is not None and 8 + header_size <= size:
            try:
                header = json.loads(f.read(header_size))
            except (UnicodeDecodeError, json.JSONDecodeError):
                pass
    if not isinstance(header, dict):
        raise EvalConfigError(f"{flag}: {file} is not a readable safetensors file (damaged or truncated header): "
                              "save or copy it again")
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    expected = 8 + header_size + max(ends, default=0)
    if expected != size:
        raise EvalConfigError(f"{flag}: {file} is truncated or damaged ({size} bytes, its header describes "
                              f"{expected}): save or copy it again")


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
