"""scripts/results_page.py refuses what is not a benchmark's results with one error line."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import results_page  # noqa: E402


@pytest.mark.parametrize("content, message", [
    ("{not json", "Expecting property name"),
    (json.dumps({"date": "2026-12-03", "command": "x"}), "no dtype section with methods"),
    (json.dumps({"float32": {"methods": {"ar": {"equal": ""}}}}), "lacks 'tasks'"),
])
def test_bad_results_end_with_one_error_line(tmp_path, capsys, content, message):
    (tmp_path / "r.json").write_text(content)
    with pytest.raises(SystemExit) as exit_:
        results_page.main([str(tmp_path / "r.json"), "--out-dir", str(tmp_path / "pages")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "pages").exists()
