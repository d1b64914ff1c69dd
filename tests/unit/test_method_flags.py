"""Every lookup-style flag (prompt lookup, REST, lookahead, SAM-D, Token Recycling, SD2's lookup
branch, Hugging Face's prompt lookup and assisted generation) is checked before the target loads:
a bad value is one ``error:`` line from the method's CLI and exit code 2, and the target is never
loaded."""
from __future__ import annotations

import re

import pytest

from evaluation.eval import run_cli
from evaluation.methods import REGISTRY, check_method_args, parser_for, run_method
from specdec.rest_datastore import Datastore

from helpers import tiny_llama

LOOKUP = ["--lookup-tokens", "8"]
BAD_FLAGS = [
    ("pld", ["--max-ngram-size", "0"], "PLD n-gram sizes"),
    ("pld", ["--min-ngram-size", "0"], "PLD n-gram sizes"),
    ("pld", ["--min-ngram-size", "4", "--max-ngram-size", "3"], "PLD n-gram sizes"),
    ("pld", ["--draft-tokens", "0"], "PLD num_pred_tokens must be a positive integer"),
    ("pld", ["--engine", "hf", "--min-ngram-size", "2"], "--min-ngram-size must be 1"),
    ("lookahead", ["--level", "1"], "lookahead level must be an integer >= 2"),
    ("lookahead", ["--window", "0"], "lookahead window must be an integer >= 1"),
    ("lookahead", ["--guess", "0"], "lookahead guess must be an integer >= 1"),
    ("rest", ["--datastore-path", "{missing}"], "REST datastore not found"),
    ("rest", ["--datastore-path", "{junk}"], "is not a REST datastore"),
    ("rest", ["--datastore-path", "{empty}"], "is not a REST datastore"),
    ("rest", ["--max-token-span", "17"], r"max_token_span \(17\) <= the datastore's sort depth \(16\)"),
    ("rest", ["--min-token-span", "0"], "REST token spans"),
    ("rest", ["--min-token-span", "5", "--max-token-span", "3"], "REST token spans"),
    ("rest", ["--draft-tokens", "0"], r"REST num_draft must be a positive integer \(--draft-tokens\)"),
    ("rest", ["--draft-len", "0"], r"REST draft_len must be a positive integer \(--draft-len\)"),
    ("rest", ["--max-matches", "-1"], r"REST max_matches must be a positive integer \(--max-matches\)"),
    ("rest", ["--datastore-path", "{other_vocab}"], "REST datastore was tokenised with another vocabulary"),
    ("samd", ["--draft-tokens", "1"], "n_predicts"),
    ("samd", ["--samd-len-threshold", "0"], "len_threshold"),
    ("recycling", ["--total-token", "1"], "--total-token counts the root"),
    ("recycling", ["--output-id-topk", "4"], "--output-id-topk 4"),
    ("sd2", ["--lookup-tokens", "-1"], "lookup_tokens must be >= 0"),
    ("sd2", ["--lookup-first"], "lookup_first needs lookup_tokens > 0"),
    ("sd2", [*LOOKUP, "--lookup-first-min-ngram", "2"], "lookup_first_min_ngram needs lookup_first"),
    ("sd2", [*LOOKUP, "--lookup-first", "--lookup-first-min-ngram", "4"], "lookup_first_min_ngram must be within"),
    ("sd2", [*LOOKUP, "--lookup-first", "--lookup-first-min-ngram", "0"], "lookup_first_min_ngram must be"),
    ("hf", ["--method", "prompt_lookup", "--prompt-lookup-num-tokens", "0"], "--prompt-lookup-num-tokens >= 1"),
    ("hf", ["--method", "prompt_lookup", "--max-matching-ngram-size", "0"], "--max-matching-ngram-size >= 1"),
    ("hf", ["--method", "assisted", "--drafter-path", "{draft}", "--num-assistant-tokens", "0"],
     "--num-assistant-tokens must be >= 1"),
    ("hf", ["--method", "assisted", "--drafter-path", "{draft}", "--assistant-confidence-threshold", "1.5"],
     "--assistant-confidence-threshold is a probability"),
]
# the flags a method needs to get as far as its checks, with files that pass them
NEEDED = {"rest": ["--datastore-path", "{datastore}"], "sd2": ["--drafter-path", "{draft}", "--exits", "1,2",
                                                             "--thresholds", "0.5,0"]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("method_flags")
    tiny_llama(num_layers=2, vocab_size=64).save_pretrained(root / "draft")
    Datastore.build([[1, 2, 3, 4, 5], [2, 3, 9]], 64, sort_depth=16, progress=False).save(root / "rest.npz")
    Datastore.build([[1, 2, 3]], 64, sort_depth=16, progress=False,  # as if from another tokenizer
                    meta={"tokenizer": "other", "vocab_fingerprint": "0123456789abcdef"}).save(root / "other.npz")
    (root / "junk.npz").write_bytes(b"not a datastore")
    (root / "empty.npz").write_bytes(b"")
    return {"draft": root / "draft", "datastore": root / "rest.npz", "junk": root / "junk.npz", "empty": root / "empty.npz",
            "other_vocab": root / "other.npz", "missing": root / "missing.npz"}


@pytest.mark.parametrize("method, flags, message", BAD_FLAGS, ids=[f"{m}{''.join(f)}" for m, f, _ in BAD_FLAGS])
def test_a_bad_lookup_flag_is_one_error_line_before_the_target_loads(method, flags, message, files, monkeypatch,
                                                                      capsys):
    def load_target(args):
        raise AssertionError(f"the target loaded before {' '.join(flags)} was refused")

    monkeypatch.setattr("evaluation.methods.load_target", load_target)
    argv = ["--model-id", "m", *[a.format(**files) for a in NEEDED.get(method, []) + flags]]
    # the last of a repeated flag wins: NEEDED's --datastore-path gives way to the case's own
    with pytest.raises(ValueError, match=message):
        check_method_args(REGISTRY[method], parser_for(REGISTRY[method]).parse_args(argv))
    with pytest.raises(SystemExit) as stopped:
        run_cli(lambda: run_method(method, argv))
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), lines


def test_the_flags_that_pass_their_checks_reach_the_target(files, monkeypatch):
    """The files and flags above are right: without a bad flag each method gets to load its target."""
    loaded = []
    monkeypatch.setattr("evaluation.methods.load_target", lambda args: loaded.append(args) or 1 / 0)
    for method in sorted({m for m, _, _ in BAD_FLAGS}):
        flags = NEEDED.get(method, []) + (["--method", "prompt_lookup"] if method == "hf" else [])
        with pytest.raises(ZeroDivisionError):
            run_method(method, ["--model-id", "m", *[a.format(**files) for a in flags]])
    assert len(loaded) == len({m for m, _, _ in BAD_FLAGS})
