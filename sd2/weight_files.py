"""Weight files and the folders that hold them. Whether a checkpoint folder's weights are all there
and whole, told from file names, sizes and safetensors headers without reading a tensor: what the
harness checks before a model loads (``evaluation.checkpoints``) and the trainer before it resumes
from a checkpoint (``sd2train.checkpoints``); each answers with the problem in words, or None, and
the caller raises its own error type around it. And a trained head's folder (EAGLE, EAGLE-3,
Medusa/Hydra): written, checked and loaded one way for every head."""
from __future__ import annotations

import json
from pathlib import Path

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # each may instead be sharded, with an index


def weights_problem(folder) -> str | None:
    """What is wrong with the folder's weights (missing, a shard missing, a safetensors file
    truncated), or None when they are complete."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        index = folder / f"{name}.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_bytes()).get("weight_map") or {}
            except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                return f"{index} is not valid JSON (damaged or cut off)"
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not (folder / s).is_file()]
            if not shards or missing:
                return f"{folder}: {index.name} names weight files that are missing: {missing[:3] or 'none listed'}"
            return next(filter(None, (safetensors_problem(folder / shard) for shard in shards)), None)
        if (folder / name).is_file():
            return safetensors_problem(folder / name)
    return f"{folder}: no weights ({' or '.join(WEIGHT_FILES)}, or a sharded index)"


def safetensors_problem(file) -> str | None:
    """For a safetensors file: None when its header parses and its tensors end where the file does
    (a copy or a save cut short fails this); other files pass."""
    file = Path(file)
    if file.suffix != ".safetensors":
        return None
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
        return f"{file} is not a readable safetensors file (damaged or truncated header)"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    expected = 8 + header_size + max(ends, default=0)
    if expected != size:
        return f"{file} is truncated or damaged ({size} bytes, its header describes {expected})"
    return None


def write_head_folder(path, config: dict, state_dict: dict, prefixes: tuple[str, ...] = ("",)) -> Path:
    """A trained head's folder (EAGLE, EAGLE-3, Medusa/Hydra): ``config`` as config.json and the
    weights whose names start with one of ``prefixes`` (the head's own, not the target's parts it
    shares) as model.safetensors, detached and contiguous on the CPU."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=1))
    weights = {k: v.detach().contiguous().cpu() for k, v in state_dict.items() if k.startswith(prefixes)}
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    return path


def load_head_weights(head, path, what: str, like, dtype=None):
    """``head`` with the weights of ``path``/model.safetensors, which must be exactly its own
    (rotary tables are rebuilt, not saved; ``what`` names the head in the error), on the device and
    in the dtype (unless ``dtype``) of the target's tensor ``like``, in eval mode."""
    from safetensors.torch import load_file

    missing, unexpected = head.load_state_dict(load_file(Path(path) / "model.safetensors"), strict=False)
    missing = [k for k in missing if not k.startswith("rotary.")]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match {what} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return head.to(dtype=dtype or like.dtype, device=like.device).eval()


def head_entry(path, key: str, what: str, others: dict[str, str] | None = None) -> dict:
    """The ``key`` entry of a saved head folder's config.json (what the head records of itself and
    its target), the folder checked first: config.json there and a JSON object, the entry present
    (``what``, e.g. 'an EAGLE head', names the head in the errors; where another head's entry is
    there instead, ``others`` maps its key to the hint added), the weights (model.safetensors) there."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} is not {what} (config.json missing)")
    try:
        config = json.loads((path / "config.json").read_bytes())
        entry = config.get(key)
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise ValueError(f"{path / 'config.json'} is not a JSON object (damaged or cut off)") from None
    if not entry:
        hint = next((f" ({hint})" for other, hint in (others or {}).items() if config.get(other)), "")
        raise ValueError(f"{path} is not {what} (no {key} entry in its config.json){hint}")
    if not (path / "model.safetensors").is_file():
        raise ValueError(f"{path}: the head's weights (model.safetensors) are missing")
    return entry
