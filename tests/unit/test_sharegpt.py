"""ShareGPT loading: recovery from the cut-off package file, roles, the train/held-out split."""
import json

import pytest

from sd2train.data import load_sharegpt, split_train_heldout


@pytest.fixture(scope="module")
def package_data():
    return load_sharegpt(verbose=False)


def test_cut_off_package_file_is_recovered(package_data):
    conversations, report = package_data
    assert len(conversations) >= 17_000
    assert report.truncated_bytes > 0
    assert report.skipped.get("incomplete record at the end of the file") == 1
    assert "cut off" in report.summary()
    roles = {m["role"] for c in conversations for m in c["messages"]}
    assert roles <= {"user", "assistant", "system"} and {"user", "assistant"} <= roles


def test_split_is_deterministic_and_disjoint(package_data):
    conversations, _ = package_data
    train, heldout = split_train_heldout(conversations, 0.02)
    again_train, again_heldout = split_train_heldout(list(reversed(conversations)), 0.02)
    assert {c["id"] for c in heldout} == {c["id"] for c in again_heldout}
    assert not {c["id"] for c in train} & {c["id"] for c in heldout}
    assert len(train) + len(heldout) == len(conversations)
    assert 0.01 < len(heldout) / len(conversations) < 0.03
    # parts of one long chat ("x_0", "x_1") never straddle the split
    bases = lambda convs: {c["id"].rpartition("_")[0] or c["id"] for c in convs}  # noqa: E731
    assert not bases(train) & bases(heldout)


def test_user_file_roles_are_normalised_and_empty_ones_dropped(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([
        {"id": "a", "conversations": [{"from": "system", "value": "Be brief."},
                                      {"from": "human", "value": "Hi"}, {"from": "chatgpt", "value": "Hello"}]},
        {"id": "b", "conversations": []},
        {"id": "c", "conversations": [{"from": "user", "value": "x"}, {"from": "bard", "value": "y"}]},
    ]))
    conversations, report = load_sharegpt(path, verbose=False)
    assert [c["id"] for c in conversations] == ["a", "c"]
    assert [m["role"] for m in conversations[0]["messages"]] == ["system", "user", "assistant"]
    assert report.skipped == {"empty conversations (no assistant text)": 1}
    assert report.truncated_bytes == 0


@pytest.mark.parametrize("content, message", [
    ('"text"', "expected a JSON list"),
    ('{"id": "a"}', "no usable conversations"),
    ('{"id": "a"}\nnot json\n{"id": "b"}', "bad.json:2: not a JSON record"),
    ("[1, 2, 3]", "no usable conversations"),
])
def test_bad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_sharegpt(path, verbose=False)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="ShareGPT data not found"):
        load_sharegpt(tmp_path / "absent.json")


def test_jsonl_is_read_and_a_torn_last_line_skipped(tmp_path):
    record = {"id": "x1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    path = tmp_path / "replies.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps({**record, "id": "x2"}) + "\n" + '{"id": "x3", "conv')
    conversations, report = load_sharegpt(path, verbose=False)
    assert [c["id"] for c in conversations] == ["x1", "x2"]
    assert conversations[0]["messages"][1] == {"role": "assistant", "content": "hello"}
    assert report.truncated_bytes > 0 and "incomplete record" in report.summary()


def test_a_generated_reply_cut_at_its_token_limit_is_marked(tmp_path):
    record = {"id": "x1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
              "finish_reason": "length"}
    path = tmp_path / "replies.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps({**record, "id": "x2", "finish_reason": "stop"}) + "\n")
    conversations, _ = load_sharegpt(path, verbose=False)
    assert [c.get("cut_off", False) for c in conversations] == [True, False]


def test_jsonl_values_may_hold_unicode_line_separators(tmp_path):
    """A JSONL writer with ensure_ascii=False leaves U+2028 and U+0085 raw: only "\\n" ends a record."""
    record = {"id": "x1", "conversations": [{"from": "human", "value": "a\u2028b\x85c"},
                                            {"from": "gpt", "value": "d\u2029e"}]}
    path = tmp_path / "replies.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    conversations, _ = load_sharegpt(path, verbose=False)
    assert conversations[0]["messages"][0]["content"] == "a\u2028b\x85c"
