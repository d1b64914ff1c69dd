"""prompt_mix: kinds by transparent rules, balance, and the Spec-Bench overlap check (real questions)."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from sd2.paths import SPEC_BENCH_QUESTIONS
from sd2train.data import is_heldout
from sd2train.prompt_mix import (CONSTRUCTED_REPLY, OverlapError, SpecBenchOverlap, build_mix, check_no_overlap,
                                 classify, constructed_prompts, parse_weights, quotas)

HELDOUT = 0.1
ARTICLE = ("The committee met on Tuesday to discuss the new harbour plan for the town. " * 25).strip()
CODE = "def parse(line):\n    return line.split(',')\n"


def spec_bench_turns(category):
    for line in SPEC_BENCH_QUESTIONS.read_text().splitlines():
        record = json.loads(line)
        if record["category"] == category:
            return record["turns"]
    raise AssertionError(category)


def chat(conv_id, *texts):
    speakers = ["human", "gpt"]
    return {"id": conv_id, "conversations": [{"from": speakers[i % 2], "value": t} for i, t in enumerate(texts)]}


def test_each_kind_has_its_rule():
    assert classify(["Translate this into French: good morning, my friends."]) == "translation"
    assert classify([ARTICLE + "\n\nSummarize the article above in three sentences."]) == "summarisation"
    assert classify([ARTICLE + "\n\nWhen did the committee meet, according to the text?"]) == "passage_qa"
    assert classify(["Web search results:\n[1] \"...\"\nQuery: best harbour towns"]) == "passage_qa"
    assert classify(["Tom has 3 apples and buys 5 more. How many apples does he have?"]) == "math"
    assert classify(["Write a short poem about the sea.", "Now make it rhyme."]) == "multi_turn"
    assert classify(["Why is the sky blue?"]) == "open_question"
    assert classify([CODE + "This fails on quoted fields, fix it"]) == "other"
    # Code is never math or an open question, whatever its numbers and question marks.
    assert classify(["How many rows does this return? " + CODE + " 3 + 4"]) == "other"
    # A task kind wins over the multi-turn shape (the first user turn decides).
    assert classify(["Translate 'hello' to German.", "And to Spanish?"]) == "translation"


def test_constructed_prompts_use_the_conversations_own_text():
    german = "Die Stadt hat einen neuen Hafen, und die Leute sind nicht mit dem Plan zufrieden, der für sie zu teuer ist."
    turns = [{"role": "user", "content": "What happened at the harbour meeting?"},
             {"role": "assistant", "content": ARTICLE},
             {"role": "user", "content": german}, {"role": "assistant", "content": "ok"}]
    made = constructed_prompts(turns)
    assert made["translation"] == f"Translate German to English: {german}"
    assert made["summarisation"] == f"Summarize: {ARTICLE}"
    assert made["passage_qa"] == f"{ARTICLE}\nWhat happened at the harbour meeting?"
    assert constructed_prompts([{"role": "user", "content": "hi"}, {"role": "assistant", "content": CODE * 60}]) == {}


def test_quotas_split_by_weight_and_pass_a_shortage_on():
    weights = parse_weights("translation=1,summarisation=1,passage_qa=1,math=1,multi_turn=1,open_question=1,other=2")
    even = quotas(80, weights, {k: 100 for k in weights})
    assert sum(even.values()) == 80 and even["other"] == 20 and even["math"] == 10
    short = quotas(80, weights, {**{k: 100 for k in weights}, "translation": 3})
    assert short["translation"] == 3 and sum(short.values()) == 80
    assert abs(short["other"] - 2 * short["math"]) <= 2  # the rest still by weight (up to rounding)
    assert sum(quotas(1000, weights, {k: 5 for k in weights}).values()) == 35  # never more than there is
    with pytest.raises(ValueError, match="unknown kind 'poetry'"):
        parse_weights("poetry=1")


@pytest.fixture(scope="module")
def planted_sharegpt(tmp_path_factory):
    """A ShareGPT file with 12 conversations of each kind, and Spec-Bench planted three ways."""
    records = []
    for i in range(12):
        records += [
            chat(f"tr{i}", f"Translate this into French, please: the harbour number {i} opens at noon.", "x"),
            chat(f"su{i}", f"Harbour report {i}. " + ARTICLE + "\n\nSummarize the text above.", "x"),
            chat(f"qa{i}", f"Harbour report {i}. " + ARTICLE + "\n\nWho met on Tuesday, according to the text?", "x"),
            chat(f"ma{i}", f"A boat carries {i + 2} crates and {i + 5} barrels. How many items in all?", "x"),
            chat(f"mt{i}", f"Write a limerick about harbour {i}.", "x", "Make it longer.", "y",
                 "Now in prose.", "z", "And shorter.", "w"),
            chat(f"op{i}", f"Why do harbours {i} need pilots?", "x"),
            chat(f"ot{i}", CODE + f"# version {i}\nThis crashes", "x"),
        ]
    mt_bench = spec_bench_turns("writing")[0]
    article = spec_bench_turns("summarization")[0].removeprefix("Summarize: ")
    question = spec_bench_turns("qa")[0]
    planted_id = lambda name: next(f"planted_{name}{k}" for k in range(100)  # noqa: E731
                                   if not is_heldout(f"planted_{name}{k}", HELDOUT))  # in the training split
    records += [chat(planted_id("mt"), mt_bench, "x"),                                   # a whole MT-bench question
                chat(planted_id("news"), "Summarize this:\n" + article[200:900], "x"),   # a piece of a news article
                chat(planted_id("qa"), f"Quick one: {question.lower()} Thanks!", "x")]    # a short qa question inside
    path = tmp_path_factory.mktemp("mix") / "sharegpt.json"
    path.write_text(json.dumps(records))
    return path


def test_the_mix_is_balanced_by_kind_and_never_holds_spec_bench(planted_sharegpt, tmp_path):
    out = tmp_path / "mix.jsonl"
    meta = build_mix(out, total=49, data_path=planted_sharegpt, max_user_turns=2, heldout_fraction=HELDOUT)
    mix = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = Counter(r["kind"] for r in mix)
    assert len(mix) == 49 and set(kinds) == {"translation", "summarisation", "passage_qa", "math", "multi_turn",
                                             "open_question", "other"}
    # Equal weights: each kind its seventh, unless the training split has fewer (then others fill in).
    for kind, n in kinds.items():
        assert n == 7 or n == meta["kinds"][kind]["available"] + meta["kinds"][kind]["constructed_available"] - \
            meta["kinds"][kind]["dropped_overlap"], (kind, n)
    assert not any(is_heldout(r["id"], HELDOUT) for r in mix)
    assert all(r["id"][:2] == {"translation": "tr", "summarisation": "su", "math": "ma", "multi_turn": "mt",
                               "open_question": "op", "other": "ot"}.get(r["kind"], r["id"][:2])
               for r in mix if not r.get("constructed"))
    # A multi-turn chat keeps its first --max-user-turns turns; single-turn kinds their first.
    for r in mix:
        users = [t for t in r["conversations"] if t["from"] == "human"]
        assert len(users) == (2 if r["kind"] == "multi_turn" else 1)
        assert r["conversations"][-1]["from"] == "gpt"
    assert "planted" not in out.read_text()
    # Asked for everything, the mix examines every candidate: the planted Spec-Bench text is
    # dropped and counted, never written.
    everything = build_mix(out, total=10_000, data_path=planted_sharegpt, heldout_fraction=HELDOUT)
    assert everything["overlap_check"]["dropped"] == 3 and "planted" not in out.read_text()
    assert sum(k["dropped_overlap"] for k in everything["kinds"].values()) == 3
    assert everything["overlap_check"]["written_checked"] == len(out.read_text().splitlines()) > 49
    assert json.loads((tmp_path / "mix.jsonl.meta.json").read_text())["settings"]["data_path"] == str(planted_sharegpt)
    check_no_overlap(out)  # the written file passes the check on its own


def test_the_mix_fills_scarce_kinds_with_constructed_prompts(tmp_path):
    german = "Die Stadt hat einen neuen Hafen, und die Leute sind nicht mit dem Plan zufrieden, der für sie zu teuer ist."
    records = [chat(f"c{i}", f"What happened at harbour {i}?", f"Report {i}. " + ARTICLE, german + f" ({i})", "ok")
               for i in range(30)]
    data = tmp_path / "sharegpt.json"
    data.write_text(json.dumps(records))
    out = tmp_path / "mix.jsonl"
    meta = build_mix(out, total=24, data_path=data, weights=parse_weights(
        "multi_turn=1,translation=1,summarisation=1,passage_qa=1,math=0,open_question=0,other=0"), heldout_fraction=0)
    mix = [json.loads(line) for line in out.read_text().splitlines()]
    assert Counter(r["kind"] for r in mix) == {"translation": 6, "summarisation": 6, "passage_qa": 6, "multi_turn": 6}
    made = [r for r in mix if r.get("constructed")]
    assert len(made) == 18 and all(r["conversations"][1]["value"] == CONSTRUCTED_REPLY for r in made)
    assert len({r.get("source_id", r["id"]) for r in mix}) == 24  # one record per conversation
    assert meta["kinds"]["translation"]["constructed_taken"] == 6


def test_a_prompt_file_that_overlaps_spec_bench_is_refused(tmp_path):
    overlap = SpecBenchOverlap()
    rag = spec_bench_turns("rag")[0]
    assert overlap.find("Please answer: " + rag[100:400]) is not None          # a 50-character window
    assert overlap.find(spec_bench_turns("translation")[0].upper()) is not None  # normalised text
    assert overlap.find("Why is the sky blue? Explain it to a child.") is None
    bad = tmp_path / "prompts.jsonl"
    bad.write_text(json.dumps(chat("ok", "Why is the sky blue?", "x")) + "\n" +
                   json.dumps(chat("bad", spec_bench_turns("math_reasoning")[0], "x")) + "\n")
    with pytest.raises(OverlapError, match="record 'bad' overlaps Spec-Bench"):
        check_no_overlap(bad, overlap)
    cli = subprocess.run([sys.executable, "-m", "sd2train.prompt_mix", "--check", str(bad)],
                         capture_output=True, text=True)
    assert cli.returncode != 0 and cli.stderr.strip().startswith("error: ") and "Traceback" not in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1
