"""REST's datastore: a token corpus with a suffix array, searched for the context's suffix.

The corpus is the concatenation of tokenised documents (assistant turns of ShareGPT chats by
default), each followed by a separator that no token equals, so no continuation runs from one
document into the next. The suffix array is built with numpy by prefix doubling, sorted on the
first ``sort_depth`` tokens of every suffix only: a query is never longer than REST's
``max_token_span`` (16), so deeper order is never looked at and the build stops after
log2(sort_depth) rounds.

File: one ``.npz`` with ``tokens`` (int32), ``suffixes`` (int32/int64) and ``meta`` (JSON: the
tokenizer it was built with, vocabulary size, sort depth, source, counts).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

SEPARATOR = -1
FORMAT = "sd2-rest-datastore-v1"


def suffix_array(tokens: np.ndarray, sort_depth: int, progress: bool = True) -> np.ndarray:
    """Start positions of all suffixes of ``tokens``, ordered by their first ``sort_depth``
    tokens (a suffix that ends earlier sorts first; SEPARATOR sorts before every token)."""
    n = len(tokens)
    rank = tokens.astype(np.int64) + 2  # 0 is reserved for "past the end", SEPARATOR -> 1
    order = np.argsort(rank, kind="stable")
    depth = 1
    rounds = max(0, int(np.ceil(np.log2(max(sort_depth, 1)))))
    for _ in tqdm(range(rounds), desc="suffix array", unit="round", disable=not progress):
        shifted = np.zeros(n, dtype=np.int64)
        shifted[: n - depth] = rank[depth:]
        key = rank * (n + 3) + shifted  # the pair (rank of first `depth` tokens, rank of next `depth`)
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        new_rank = np.empty(n, dtype=np.int64)
        new_rank[order] = np.concatenate(([1], 1 + np.cumsum(sorted_key[1:] != sorted_key[:-1])))
        rank, depth = new_rank, depth * 2
        if rank.max() == n:  # all suffixes already distinct
            break
    return order.astype(np.int32 if n < 2**31 else np.int64)


def vocab_fingerprint(tokenizer) -> str:
    """Identifies a vocabulary (token strings and ids), whatever path the tokenizer came from."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def check_datastore_tokenizer(meta: dict, tokenizer) -> None:
    """A datastore (its ``meta``, see :meth:`Datastore.read_meta`) is only usable with the
    vocabulary it was tokenised with."""
    stored = meta.get("vocab_fingerprint")
    if stored is not None and stored != vocab_fingerprint(tokenizer):
        raise ValueError(f"REST datastore was tokenised with another vocabulary ({meta.get('tokenizer')}, "
                         f"{meta['vocab_size']} tokens) than the target's ({len(tokenizer)} tokens): rebuild it "
                         f"with scripts/build_rest_datastore.py --model-path <target>")


@dataclass
class Datastore:
    tokens: np.ndarray  # int32, documents each followed by SEPARATOR
    suffixes: np.ndarray  # suffix array over `tokens`
    meta: dict

    def __post_init__(self):
        # Where the suffixes starting with each token begin in the suffix array (the array is
        # ordered by first token, separators first), so a search starts in a narrow range.
        counts = np.bincount(self.tokens[self.tokens >= 0], minlength=self.meta["vocab_size"])
        self._first_token_start = np.concatenate(([0], np.cumsum(counts))) + int((self.tokens < 0).sum())

    @property
    def sort_depth(self) -> int:
        return int(self.meta["sort_depth"])

    @classmethod
    def build(cls, documents, vocab_size: int, sort_depth: int = 32, meta: dict | None = None,
              progress: bool = True) -> Datastore:
        """``documents``: iterable of token-id lists."""
        pieces = []
        for doc in documents:
            if len(doc):
                pieces.append(np.asarray(doc, dtype=np.int32))
                pieces.append(np.array([SEPARATOR], dtype=np.int32))
        if not pieces:
            raise ValueError("REST datastore: no non-empty documents to index")
        tokens = np.concatenate(pieces)
        if tokens.max() >= vocab_size:
            raise ValueError(f"REST datastore: token id {int(tokens.max())} >= vocab_size {vocab_size}")
        meta = dict(meta or {}, format=FORMAT, vocab_size=int(vocab_size), sort_depth=int(sort_depth),
                    documents=len(pieces) // 2, tokens=int(len(tokens) - len(pieces) // 2))
        return cls(tokens, suffix_array(tokens, sort_depth, progress), meta)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:  # a file object: np.savez would otherwise append ".npz"
            np.savez(f, tokens=self.tokens, suffixes=self.suffixes, meta=np.array(json.dumps(self.meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Datastore:
        meta = cls.read_meta(path)
        with np.load(path, allow_pickle=False) as data:
            return cls(data["tokens"], data["suffixes"], meta)

    @staticmethod
    def read_meta(path: str | Path) -> dict:
        """The datastore's meta (sort depth, vocabulary, ...) without reading its arrays: what the
        settings are checked against before a target loads."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"REST datastore not found: {path} (build one with scripts/build_rest_datastore.py)")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                missing = {"tokens", "suffixes"} - set(data.files)
        except (ValueError, KeyError, OSError, EOFError) as exc:  # an empty file: EOFError
            raise ValueError(f"{path} is not a REST datastore ({exc or type(exc).__name__})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or missing:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise ValueError(f"{path} is not a REST datastore of format {FORMAT} (found {found!r}"
                             f"{', without ' + ' and '.join(sorted(missing)) if missing else ''})")
        return meta

    def check_tokenizer(self, tokenizer) -> None:
        check_datastore_tokenizer(self.meta, tokenizer)

    def _compare_at(self, position: int, query: list[int]) -> list[int]:
        return self.tokens[position: position + len(query)].tolist()

    def match_range(self, query: list[int]) -> tuple[int, int]:
        """[lo, hi) in the suffix array of the suffixes that start with ``query``."""
        if not query or len(query) > self.sort_depth:
            raise ValueError(f"query length must be in [1, {self.sort_depth}], got {len(query)}")
        first = query[0]
        if not 0 <= first < self.meta["vocab_size"]:
            return 0, 0
        lo, hi = int(self._first_token_start[first]), int(self._first_token_start[first + 1])
        # lower bound: first suffix whose prefix >= query
        a, b = lo, hi
        while a < b:
            mid = (a + b) // 2
            if self._compare_at(int(self.suffixes[mid]), query) < query:
                a = mid + 1
            else:
                b = mid
        start = a
        # upper bound: first suffix whose prefix > query
        b = hi
        while a < b:
            mid = (a + b) // 2
            if self._compare_at(int(self.suffixes[mid]), query) <= query:
                a = mid + 1
            else:
                b = mid
        return start, a

    def continuations(self, context: list[int], max_span: int, min_span: int, length: int,
                      max_matches: int) -> tuple[int, np.ndarray]:
        """For the longest suffix of ``context`` (max_span down to min_span tokens) found in the
        corpus: (its length, up to ``max_matches`` continuations of ``length`` tokens, spread
        evenly over all its occurrences, as rows padded with SEPARATOR). (0, empty) if none."""
        for span in range(min(max_span, len(context), self.sort_depth), min_span - 1, -1):
            lo, hi = self.match_range(context[-span:])
            if hi > lo:
                picks = np.unique(np.linspace(lo, hi - 1, min(hi - lo, max_matches)).round().astype(np.int64))
                starts = self.suffixes[picks].astype(np.int64) + span
                idx = starts[:, None] + np.arange(length)
                rows = np.where(idx < len(self.tokens), self.tokens[np.minimum(idx, len(self.tokens) - 1)], SEPARATOR)
                # cut each row at its document's end
                rows[np.maximum.accumulate(rows == SEPARATOR, axis=1)] = SEPARATOR
                return span, rows
        return 0, np.empty((0, length), dtype=np.int32)

    def summary(self) -> str:
        m = self.meta
        mb = (self.tokens.nbytes + self.suffixes.nbytes) / 2**20
        return (f"{m['documents']} documents, {m['tokens']} tokens, sort depth {m['sort_depth']}, "
                f"tokenizer {m.get('tokenizer', '?')}, {mb:.1f} MiB")


def tokenize_documents(texts: list[str], tokenizer, batch_size: int = 1000, progress: bool = True):
    """Token ids of each text (no special tokens), in batches (fast tokenizers run them in parallel)."""
    for i in tqdm(range(0, len(texts), batch_size), desc="tokenising", unit="batch", disable=not progress):
        yield from tokenizer(texts[i: i + batch_size], add_special_tokens=False)["input_ids"]


def sharegpt_documents(conversations: list[dict], roles: tuple[str, ...] = ("assistant",)) -> list[str]:
    """The texts REST indexes from chats: by default each assistant turn is one document."""
    return [m["content"] for conv in conversations for m in conv["messages"]
            if m["role"] in roles and m["content"].strip()]


def build_from_chats(tokenizer, tokenizer_name: str, conversations: list[dict], source: str,
                     roles: tuple[str, ...] = ("assistant",), sort_depth: int = 32,
                     progress: bool = True) -> tuple[Datastore, float]:
    """Datastore over chats (``{"messages": [{"role", "content"}, ...]}``, as the trainer's data
    module loads ShareGPT). Returns it and the seconds taken."""
    t0 = time.perf_counter()
    texts = sharegpt_documents(conversations, roles)
    docs = tokenize_documents(texts, tokenizer, progress=progress)
    store = Datastore.build(docs, vocab_size=len(tokenizer), sort_depth=sort_depth, progress=progress,
                            meta={"tokenizer": tokenizer_name, "vocab_fingerprint": vocab_fingerprint(tokenizer),
                                  "source": source, "conversations": len(conversations), "roles": list(roles)})
    return store, time.perf_counter() - t0
