"""The default paths are defined once, in sd2.paths: the shell scripts ask its command line for
them (stdlib only, so it answers before the virtual environment exists) instead of typing them."""
from __future__ import annotations

import os
import subprocess
import sys

from sd2.paths import DEFAULT_DATASTORE, DEFAULT_DRAFT_DIR, DEFAULT_MODEL_DIR, REPO_ROOT, model_name

SKIPPED = {".git", ".venv", "models", "outputs", "data"}  # not the project's scripts


def shell_scripts():
    for top in REPO_ROOT.iterdir():
        if top.is_dir() and top.name not in SKIPPED:
            yield from top.rglob("*.sh")
    yield from REPO_ROOT.glob("*.sh")


def paths_cli(*args: str) -> subprocess.CompletedProcess:
    # -S: no site-packages, as before the virtual environment is set up
    return subprocess.run([sys.executable, "-S", "-m", "sd2.paths", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, cwd=REPO_ROOT, timeout=60)


def test_no_shell_script_types_a_default_path():
    scripts = list(shell_scripts())
    assert len(scripts) >= 10 and REPO_ROOT / "scripts" / "quickstart.sh" in scripts
    typed = [DEFAULT_MODEL_DIR.name, DEFAULT_DATASTORE.name, DEFAULT_DRAFT_DIR.name, model_name() + "-"]
    offending = [f"{script.relative_to(REPO_ROOT)}: {word}" for script in scripts
                 for word in typed if word in script.read_text()]
    assert not offending, "ask `python -m sd2.paths` instead: " + ", ".join(offending)


def test_the_command_line_prints_the_defaults_without_site_packages():
    assert paths_cli("target").stdout == f"{DEFAULT_MODEL_DIR}\n"
    assert paths_cli("datastore").stdout == f"{DEFAULT_DATASTORE}\n"
    assert paths_cli("draft").stdout == f"{DEFAULT_DRAFT_DIR}\n"
    assert paths_cli("name").stdout == "smollm2-135m\n"  # as the published answer files are named
    assert paths_cli("name", "elsewhere/Llama-3.2-1B-Instruct").stdout == "Llama-3.2-1B-Instruct\n"
    bad = paths_cli("targets")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1 and "target" in bad.stderr


def test_the_default_targets_short_name_names_its_drafts_folders(tmp_path):
    from evaluation.presets import Settings

    assert model_name(DEFAULT_MODEL_DIR) == model_name() == "smollm2-135m"
    assert model_name(tmp_path / "smollm2-135m-instruct") == "smollm2-135m-instruct"  # another folder: its name
    assert Settings().eagle_head == str(REPO_ROOT / "models" / "eagle-smollm2-135m")
