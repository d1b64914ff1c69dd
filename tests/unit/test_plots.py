"""The plot script reads answer files through speed.py and writes the figures and their data."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import plot_results  # noqa: E402


def answer(qid, category, tokens, seconds, accepts, stats=None):
    return {"question_id": qid, "category": category, "answer_id": f"a{qid}", "model_id": "m", "tstamp": 0.0,
            "choices": [{"index": 0, "turns": ["x"], "decoding_steps": [len(accepts)], "new_tokens": [tokens],
                         "wall_time": [seconds], "accept_lengths": accepts, "stats": [stats or {}]}]}


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_speedup_and_exit_usage_plots(tmp_path):
    base = write(tmp_path / "ar.jsonl", [answer(1, "qa", 10, 1.0, [1] * 10), answer(2, "rag", 10, 2.0, [1] * 10)])
    sd2 = write(tmp_path / "sd2.jsonl", [
        answer(1, "qa", 10, 0.5, [4, 3, 3], {"exit_tokens": {"6": 6, "12": 2}}),
        answer(2, "rag", 10, 0.5, [5, 5], {"exit_tokens": {"6": 1, "9": 3}}),
    ])
    out = tmp_path / "assets"
    plot_results.main(["--base-path", base, "--method", f"SD2 tree={sd2}", "--out-dir", str(out)])
    assert (out / "speedup.png").stat().st_size > 0 and (out / "exit_usage_sd2-tree.png").stat().st_size > 0
    data = json.loads((out / "plot_data.json").read_text())
    assert data["speedup"]["SD2 tree"]["qa"] == 2.0 and data["speedup"]["SD2 tree"]["rag"] == 4.0
    # Spec-Bench's overall figure: mean of per-question rates, 20 tok/s vs (10 + 5) / 2
    assert abs(data["speedup"]["SD2 tree"]["overall"] - 20 / 7.5) < 1e-12
    assert data["exit_usage_sd2-tree"] == {"qa": {"6": 6, "12": 2}, "rag": {"6": 1, "9": 3}}


def test_markdown_table_has_speed_tau_and_equality(tmp_path):
    base = write(tmp_path / "ar.jsonl", [answer(1, "qa", 10, 1.0, [1] * 10), answer(2, "rag", 10, 2.0, [1] * 10)])
    other = [answer(1, "qa", 10, 0.5, [4, 3, 3]), answer(2, "rag", 10, 0.5, [5, 5])]
    other[1]["choices"][0]["turns"] = ["y"]  # one answer differs from AR's
    sd2 = write(tmp_path / "sd2.jsonl", other)
    table = tmp_path / "table.md"
    plot_results.main(["--base-path", base, "--method", f"SD2 tree={sd2}", "--out-dir", str(tmp_path / "a"),
                       "--table", str(table)])
    lines = table.read_text().splitlines()
    assert lines[0] == "| method | qa | rag | overall | tok/s | = AR |"
    assert lines[2] == "| AR (engine) | 1.00× (1.00) | 1.00× (1.00) | 1.00× (1.00) | 7.5 | — |"
    assert lines[3] == "| SD2 tree | 2.00× (3.33) | 4.00× (5.00) | 2.67× (4.00) | 20.0 | 1/2 |"
