"""The draft spec: what makes a Hugging Face checkpoint an SD2 draft. Training writes it, inference
reads it; both import this module.

It lives in the checkpoint's ``config.json`` under ``sd2``::

    {"exits": [6, 9, 12], "thresholds": [0.7, 0.35, 0.0], "target": "models/smollm2-135m-instruct",
     "target_num_hidden_layers": 30, "draft_vocab_file": "draft_vocab.json"}

``exits`` count decoder layers (an exit k is the shared norm and head after layer k); a token is
drafted at the shallowest exit whose top-1 probability exceeds its threshold (the last is 0: the
deepest exit always drafts). ``draft_vocab_file`` names a JSON list of token ids, most frequent
first, that a reduced draft head scores. ``"exit_adapters": true`` marks a draft whose exits each
run one more decoder layer of their own before the norm and head (``sd2.exit_adapters``); absent,
an exit is the norm and head alone.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

DRAFT_VOCAB_FILE = "draft_vocab.json"
DEFAULT_THRESHOLD = 0.5  # the original's per-exit confidence threshold; the last exit uses 0


def default_exits(num_layers: int) -> list[int]:
    """N/2, 3N/4, N (12 -> 6, 9, 12), without duplicates for small N."""
    return sorted({max(1, num_layers // 2), max(1, (3 * num_layers) // 4), num_layers})


def default_thresholds(exits: list[int]) -> list[float]:
    return [DEFAULT_THRESHOLD] * (len(exits) - 1) + [0.0]


def drafts_at(top1_prob, threshold: float):
    """The exit rule, the one inference drafts by and the exit report models: a token is drafted at
    the shallowest exit where this holds, its top-1 probability (a float or a tensor of them) above
    the exit's threshold. Every token passes the last exit's 0 (a top-1 probability is at least
    1 / vocabulary size)."""
    return top1_prob > threshold


def validate_exits(exits: list[int], num_layers: int) -> list[int]:
    """Exits must be layer counts 1..num_layers, strictly increasing."""
    if not exits:
        raise ValueError("at least one exit is needed (e.g. 6,9,12)")
    if any(k < 1 for k in exits):
        raise ValueError(f"exits count decoder layers and must be >= 1, got {list(exits)}")
    if any(b <= a for a, b in zip(exits, exits[1:])):
        raise ValueError(f"exits must be strictly increasing, got {list(exits)}")
    if exits[-1] > num_layers:
        raise ValueError(f"exit {exits[-1]} is deeper than the draft, which has {num_layers} layers")
    return list(exits)


def validate_thresholds(thresholds: list[float], exits: list[int]) -> list[float]:
    if len(thresholds) != len(exits):
        raise ValueError(f"{len(thresholds)} thresholds for {len(exits)} exits: give one threshold per exit")
    if any(not 0 <= t <= 1 for t in thresholds):
        raise ValueError(f"thresholds must lie in [0, 1], got {list(thresholds)}")
    if thresholds[-1] != 0:
        raise ValueError(f"the last threshold must be 0 (the deepest exit always drafts), got {thresholds[-1]}")
    return list(thresholds)


@dataclass
class DraftSpec:
    exits: list[int]
    thresholds: list[float] = field(default_factory=list)  # empty: the defaults for these exits
    target: str | None = None
    target_num_hidden_layers: int | None = None
    draft_vocab_file: str | None = None
    exit_adapters: bool = False  # one adapter layer at each of these exits (sd2.exit_adapters)

    @classmethod
    def from_config(cls, config, exits: list[int] | None = None, thresholds: list[float] | None = None) -> DraftSpec:
        """The spec of a draft's (HF) config, with ``exits``/``thresholds`` overriding it, checked
        against its depth. A config without ``sd2`` gets the default exits for its depth."""
        stored = dict(getattr(config, "sd2", None) or {})
        spec = cls(**{k: stored[k] for k in ("exits", "thresholds", "target", "target_num_hidden_layers",
                                             "draft_vocab_file", "exit_adapters") if k in stored}) if "exits" in stored \
            else cls(default_exits(config.num_hidden_layers))
        return spec.with_exits(exits, thresholds).validate(config.num_hidden_layers)

    def with_exits(self, exits: list[int] | None = None, thresholds: list[float] | None = None) -> DraftSpec:
        """Other exits and/or thresholds; new exits without thresholds get the default ones. A draft
        with exit adapters can exit only where it has one (any of them)."""
        exits = list(exits) if exits else list(self.exits)
        missing = [k for k in exits if k not in self.exits] if self.exit_adapters else []
        if missing:
            raise ValueError(f"this draft has exit adapters for exits {list(self.exits)} only; it cannot exit at {missing}")
        if thresholds:
            thresholds = list(thresholds)
        elif exits == list(self.exits) and self.thresholds:
            thresholds = list(self.thresholds)
        else:
            thresholds = default_thresholds(exits)
        return replace(self, exits=exits, thresholds=thresholds)

    def validate(self, num_layers: int) -> DraftSpec:
        validate_exits(self.exits, num_layers)
        validate_thresholds(self.thresholds or default_thresholds(self.exits), self.exits)
        return self

    def to_config(self) -> dict:
        """What goes into ``config.sd2`` (``exit_adapters`` only where true)."""
        entry = asdict(replace(self, thresholds=self.thresholds or default_thresholds(self.exits)))
        if not self.exit_adapters:
            del entry["exit_adapters"]
        return entry

    def vocab_path(self, folder: str | Path) -> Path | None:
        return Path(folder, self.draft_vocab_file) if self.draft_vocab_file else None

    def load_vocab(self, folder: str | Path, size: int | None = None, vocab_size: int | None = None) -> list[int] | None:
        """The draft vocabulary's token ids (the first ``size``; None or 0 size: all), or None
        when the draft has none; a named file that is missing or malformed is an error. Ids must
        lie below ``vocab_size`` (default: the draft's config.json's)."""
        if self.draft_vocab_file is None:
            return None
        if vocab_size is None and Path(folder, "config.json").is_file():
            vocab_size = json.loads(Path(folder, "config.json").read_text()).get("vocab_size")
        vocab = stored_draft_vocab(folder, {"draft_vocab_file": self.draft_vocab_file}, vocab_size)
        if size:
            if size > len(vocab):
                raise ValueError(f"draft vocabulary size {size} exceeds the draft vocabulary ({len(vocab)} ids in "
                                 f"{self.draft_vocab_file})")
            vocab = vocab[:size]
        return vocab


def stored_draft_vocab(folder: str | Path, entry: dict, vocab_size: int | None = None) -> list[int] | None:
    """The draft vocabulary a trained folder records in its config entry (``config.sd2`` of a draft,
    the heads' and EAGLE heads' entries): the file ``entry["draft_vocab_file"]`` names, beside the
    weights, as every folder now stores it; an inline ``entry["draft_vocab"]`` list, as Medusa/Hydra
    folders saved before did; None when it names none. A named file that is missing is an error."""
    name = entry.get("draft_vocab_file")
    if name:
        path = Path(folder, name)
        if not path.is_file():
            raise ValueError(f"{Path(folder, 'config.json')} names the draft vocabulary {path}, which does not exist")
        return read_draft_vocab(path, vocab_size)
    if entry.get("draft_vocab") is not None:
        return check_draft_vocab(entry["draft_vocab"], f"draft_vocab in {Path(folder, 'config.json')}", vocab_size)
    return None


def write_draft_vocab_file(folder: str | Path, ids: list[int]) -> str:
    """``ids`` as the folder's draft vocabulary file; returns its name, for the config entry's
    ``draft_vocab_file``."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    Path(folder, DRAFT_VOCAB_FILE).write_text(json.dumps([int(t) for t in ids]))
    return DRAFT_VOCAB_FILE


def read_draft_vocab(path: str | Path, vocab_size: int | None = None) -> list[int]:
    """A draft vocabulary file (a JSON list of token ids), checked by ``check_draft_vocab``."""
    try:
        ids = json.loads(Path(path).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = f"{exc.msg}: line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise ValueError(f"draft vocabulary {path} is not valid JSON ({detail})") from None
    return check_draft_vocab(ids, path, vocab_size)


def check_draft_vocab(ids, where: str | Path, vocab_size: int | None = None) -> list[int]:
    """A draft vocabulary is a non-empty list of distinct token ids, whole numbers in [0, vocab_size)
    (a reduced head scores exactly these rows, so a fraction, a repeat or an id past the
    vocabulary would draft tokens the target cannot mean)."""
    if not isinstance(ids, list) or not ids:
        raise ValueError(f"draft vocabulary {where}: expected a non-empty JSON list of token ids")
    bad = [t for t in ids if isinstance(t, bool) or not isinstance(t, int) or t < 0
           or (vocab_size is not None and t >= vocab_size)]
    if bad:
        bound = f"[0, {vocab_size})" if vocab_size is not None else ">= 0"
        raise ValueError(f"draft vocabulary {where}: token ids must be whole numbers {bound}, found {bad[:5]}")
    if len(set(ids)) != len(ids):
        seen, repeated = set(), []
        for t in ids:
            if t in seen:
                repeated.append(t)
            seen.add(t)
        raise ValueError(f"draft vocabulary {where}: token ids must be distinct, {repeated[:5]} repeated")
    return ids
