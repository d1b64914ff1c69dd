"""REST: the numpy suffix array, retrieval, the drafter's trie, and the datastore build."""
import numpy as np
import pytest
import torch

from sd2.paths import DEFAULT_MODEL_DIR
from sd2train.data import load_sharegpt
from specdec.drafters.rest import RestDrafter
from specdec.rest_datastore import SEPARATOR, Datastore, build_from_chats


@pytest.fixture(scope="module")
def random_store():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 6, size=rng.integers(1, 40)).tolist() for _ in range(300)]
    return Datastore.build(docs, vocab_size=6, sort_depth=8, progress=False)


def occurrences(tokens: np.ndarray, query: list[int]) -> list[int]:
    m = len(query)
    return [p for p in range(len(tokens) - m + 1) if tokens[p:p + m].tolist() == query]


def test_suffix_array_is_sorted_on_the_first_sort_depth_tokens(random_store):
    t = random_store.tokens
    assert sorted(random_store.suffixes.tolist()) == list(range(len(t)))
    prefixes = [t[p:p + 8].tolist() for p in random_store.suffixes.tolist()]
    assert all(a <= b for a, b in zip(prefixes, prefixes[1:]))


@pytest.mark.parametrize("query", [[1], [2, 3], [0, 0, 0], [5, 4, 3, 2], [1, 2, 3, 4, 5, 0, 1, 2]])
def test_match_range_finds_every_occurrence(random_store, query):
    lo, hi = random_store.match_range(query)
    found = sorted(random_store.suffixes[lo:hi].tolist())
    assert found == occurrences(random_store.tokens, query)


def test_continuations_come_from_the_longest_suffix_and_stop_at_document_ends():
    store = Datastore.build([[1, 2, 3, 4, 5], [9, 3, 4, 7], [3, 4, 8, 8, 8, 8]], vocab_size=10,
                            sort_depth=4, progress=False)
    span, rows = store.continuations([0, 2, 3, 4], max_span=4, min_span=1, length=3, max_matches=10)
    assert span == 3 and rows.tolist() == [[5, SEPARATOR, SEPARATOR]]  # "2 3 4" -> 5, then the document ends
    span, rows = store.continuations([0, 6, 3, 4], max_span=4, min_span=1, length=3, max_matches=10)
    assert span == 2 and sorted(rows.tolist()) == [[5, -1, -1], [7, -1, -1], [8, 8, 8]]
    assert store.continuations([6, 6], 2, 1, 3, 10)[0] == 0  # token 6 never occurs


def test_drafter_keeps_the_most_frequent_continuations_as_a_subtree():
    docs = [[1, 2, 3, 4]] * 5 + [[1, 2, 3, 5]] * 3 + [[1, 2, 6]] * 2 + [[7, 2, 9]]
    store = Datastore.build(docs, vocab_size=10, sort_depth=8, progress=False)
    drafter = RestDrafter(store, num_draft=3, max_token_span=4, min_token_span=2)
    tree = drafter.propose(torch.tensor([0, 1, 2]))
    assert drafter.last_match_len == 2
    # counts: (3)=8, (3,4)=5, (3,5)=3, (6)=2 -> the best three nodes
    assert tree.tokens.tolist() == [3, 4, 5] and tree.parents.tolist() == [-1, 0, 0]
    big = RestDrafter(store, num_draft=64, max_token_span=4, min_token_span=2).propose(torch.tensor([1, 2]))
    assert sorted(big.tokens.tolist()) == [3, 4, 5, 6]
    assert RestDrafter(store, max_token_span=4).propose(torch.tensor([8, 8])).tokens.numel() == 0


def test_bad_input_is_rejected_early(tmp_path, random_store):
    with pytest.raises(FileNotFoundError, match="REST datastore not found"):
        RestDrafter(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a datastore")
    with pytest.raises(ValueError, match="not a REST datastore"):
        RestDrafter(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="max_token_span"):
        RestDrafter(random_store, max_token_span=9)  # deeper than the suffix array is sorted
    with pytest.raises(ValueError, match="token spans"):
        RestDrafter(random_store, min_token_span=3, max_token_span=2)
    with pytest.raises(ValueError, match="num_draft must be a positive integer"):
        RestDrafter(random_store, num_draft=0, max_token_span=8)


def test_save_and_load_round_trip(tmp_path, random_store):
    path = random_store.save(tmp_path / "store.npz")
    loaded = Datastore.load(path)
    assert np.array_equal(loaded.tokens, random_store.tokens)
    assert np.array_equal(loaded.suffixes, random_store.suffixes) and loaded.meta == random_store.meta


def test_sharegpt_build_with_the_targets_tokenizer_and_vocabulary_check(tmp_path):
    from transformers import AutoTokenizer, LlamaTokenizerFast

    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    store, seconds = build_from_chats(tokenizer, "smollm2", load_sharegpt(verbose=False)[0][:200], "sharegpt", progress=False)
    assert store.meta["documents"] > 200 and store.meta["tokens"] > 50_000
    path = store.save(tmp_path / "sharegpt.npz")
    drafter = RestDrafter(path, tokenizer=tokenizer)
    ids = tokenizer("Here is an example of how you can", add_special_tokens=False)["input_ids"]
    tree = drafter.propose(torch.tensor(ids))
    assert 0 < len(tree) <= 64 and drafter.last_match_len >= 2
    # a different vocabulary (same size or not) is refused
    other = LlamaTokenizerFast.from_pretrained(DEFAULT_MODEL_DIR)
    other.add_tokens(["<extra_token>"])
    with pytest.raises(ValueError, match="another vocabulary"):
        RestDrafter(path, tokenizer=other)
