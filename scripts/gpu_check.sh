#!/usr/bin/env bash
# GPU check, one call under ~8 minutes on a CUDA machine: the CUDA tests, then one interleaved
# benchmark (2 questions per task, 128 new tokens, float32 and bfloat16) of the engine eager and
# with CUDA graphs (--cuda-graphs: fixed-shape target and draft passes, captured once), HF generate
# with a static cache (transformers compiles its forward), PLD and SD2; speed-ups against AR with
# CUDA graphs, equality against the eager AR engine on token ids.
#
#   bash scripts/gpu_check.sh                       # the default target and draft (prepared by quickstart)
#   MODEL=path DRAFT=path bash scripts/gpu_check.sh
#   PER_TASK=1 DTYPES=bfloat16 BENCH_ARGS="--json out.json" bash scripts/gpu_check.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$ROOT:$ROOT/train:$ROOT/inference${PYTHONPATH:+:$PYTHONPATH}"
MODEL=${MODEL:-$("$PY" -m sd2.paths target)}
DRAFT=${DRAFT:-$("$PY" -m sd2.paths draft)}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device')"
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"

echo "== CUDA tests"
"$PY" -m pytest -q -p no:cacheprovider -m "not integration" tests/unit/test_cuda.py tests/unit/test_target.py \
    tests/unit/test_engine.py tests/unit/test_verify.py tests/unit/test_sd2.py tests/unit/test_seeds.py

echo "== benchmark (${PER_TASK:-2} questions per task, ${MAX_NEW_TOKENS:-128} new tokens)"
# SD2 without prompt lookup here (--lookup-tokens 0 --lookup-first 0), but for the small tree's
"$PY" scripts/benchmark_methods.py --model-path "$MODEL" --drafter-path "$DRAFT" --device cuda \
    --questions-per-task "${PER_TASK:-2}" --max-new-tokens "${MAX_NEW_TOKENS:-128}" \
    --dtypes "${DTYPES:-float32,bfloat16}" --sd2-draft-dtype bfloat16 --baseline ar_graphs \
    --lookup-tokens 0 --lookup-first 0 \
    --presets ar,ar_graphs,hf_static,pld,sd2_tree_auto \
    --method "pld_graphs=pld --cuda-graphs" \
    --method "sd2_tree_auto_graphs=sd2_tree_auto --cuda-graphs" \
    --method "sd2_chain_graphs=sd2_chain --cuda-graphs" \
    --method "sd2_small_tree_lookup_graphs=sd2 --cuda-graphs --tree --total-token 6 --depth 2 --top-k 3 --lookup-tokens 8 --lookup-first" \
    ${BENCH_ARGS:-}
