#!/usr/bin/env bash
# GPU check, one call under ~8 minutes on a CUDA machine: the CUDA tests, then a short benchmark
# (AR vs SD2 chain/tree on the same engine, HF generate with and without a static cache), one table.
#
#   bash scripts/gpu_check.sh                       # the default target and draft (prepared by quickstart)
#   MODEL=path DRAFT=path bash scripts/gpu_check.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$ROOT:$ROOT/train:$ROOT/inference${PYTHONPATH:+:$PYTHONPATH}"
MODEL=${MODEL:-$ROOT/models/smollm2-135m-instruct}
DRAFT=${DRAFT:-$ROOT/models/sd2-draft-soft-12}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device')"
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"

echo "== CUDA tests"
"$PY" -m pytest -q -p no:cacheprovider -m "not integration" tests/unit/test_cuda.py tests/unit/test_engine.py tests/unit/test_verify.py tests/unit/test_sd2.py

echo "== benchmark (${PER_TASK:-2} questions per task, ${MAX_NEW_TOKENS:-128} new tokens)"
"$PY" scripts/benchmark_sd2.py --model-path "$MODEL" --drafter-path "$DRAFT" --device cuda \
    --questions-per-task "${PER_TASK:-2}" --max-new-tokens "${MAX_NEW_TOKENS:-128}" \
    --dtypes "${DTYPES:-float32,bfloat16}" --methods ar,hf,hf_static,sd2_chain,sd2_tree ${BENCH_ARGS:-}
