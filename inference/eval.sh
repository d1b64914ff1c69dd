#!/usr/bin/env bash
# Spec-Bench-style evaluation: every method answers the same questions, then speed and equality
# reports against the AR baseline. Methods are named presets (docs/presets.md;
# `python -m evaluation.run_presets --list` prints them). Set any setting below in the environment
# (or edit it here), then run from anywhere:
#
#   bash inference/eval.sh                                   # everything, all 480 questions
#   PER_TASK=8 MAX_NEW_TOKENS=128 bash inference/eval.sh     # the 48-question run
#   METHODS="ar sd2_chain" QUESTION_END=4 bash inference/eval.sh
#   NUM_GPUS_TOTAL=8 bash inference/eval.sh                  # each method on 8 GPU workers (Ray)
#   DRY_RUN=1 bash inference/eval.sh                         # check everything, print the commands
#
# Answers go to $ANSWERS/$MODEL_NAME-<preset>-<dtype>-temp-<T>.jsonl; an interrupted run resumes
# where it stopped. This script only passes the settings on: evaluation.run_presets checks every
# preset's flags before the first method runs, and prints the reports of every method that finished.
# A setting left empty keeps its default (named in the comment).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ---- settings -------------------------------------------------------------------------------
METHODS=${METHODS:-"ar ar_hf sd2_chain sd2_tree sps sps_hf pld pld_hf lookahead rest eagle eagle2 medusa hydra"}
TARGET=${TARGET:-}                 # target checkpoint (the default target: python -m sd2.paths target)
DRAFT=${DRAFT:-}                   # SD2 draft, also SpS's at its deepest exit (default: python -m sd2.paths draft)
DATASTORE=${DATASTORE:-}           # REST datastore (python -m sd2.paths datastore)
EAGLE_HEAD=${EAGLE_HEAD:-}         # EAGLE head (models/eagle-<name>: train/scripts/train_eagle.sh's)
EAGLE3_HEAD=${EAGLE3_HEAD:-}       # EAGLE-3 head (models/eagle3-<name>: train/scripts/train_eagle3.sh's)
MEDUSA_HEADS=${MEDUSA_HEADS:-}     # Medusa heads (models/medusa-<name>: train/scripts/train_medusa.sh's)
HYDRA_HEADS=${HYDRA_HEADS:-}       # Hydra heads (models/hydra-<name>: train/scripts/train_hydra.sh's)
MODEL_NAME=${MODEL_NAME:-}         # prefix of every model-id (the target's short name: python -m sd2.paths name TARGET)
DTYPE=${DTYPE:-}                   # float32 | bfloat16 | float16 (float32)
# DRAFT_DTYPE                      # SpS's draft dtype (bfloat16; '' = the target's, which verifies, so
                                   # the output is unchanged)
SD2_DRAFT_DTYPE=${SD2_DRAFT_DTYPE:-}  # SD2's draft dtype (int8 on a CPU, bfloat16 on CUDA)
# SD2's defaults are its fastest measured setting on 2 CPU cores in float32 (docs/presets.md):
LOOKUP_TOKENS=${LOOKUP_TOKENS:-}   # SD2 (chain and tree): prompt lookup of up to N tokens (3; 0: none)
LOOKUP_FIRST=${LOOKUP_FIRST:-}     # 1: where lookup finds a continuation, SD2 verifies it alone; 0: as an
                                   # extra branch beside the draft's (1)
SD2_TREE=${SD2_TREE:-}             # sd2_tree's shape and exits ("--total-token 4 --depth 2 --top-k 2
                                   # --submodels 6 --thresholds 0"; or the sd2_tree_auto preset)
SD2_EXITS=${SD2_EXITS:-}           # exits for every SD2 preset, e.g. 6 or 6,9,12 (the draft's own for
                                   # sd2_chain, SD2_TREE's for sd2_tree)
SD2_THRESHOLDS=${SD2_THRESHOLDS:-} # one per exit, the last 0 (the draft's, or defaults)
DEVICE=${DEVICE:-}                 # auto | cpu | cuda (auto)
CUDA_GRAPHS=${CUDA_GRAPHS:-0}      # 1: the shared engine's methods with --cuda-graphs (CUDA)
BENCH=${BENCH:-}                   # questions: data/$BENCH/question.jsonl (spec_bench)
TEMP=${TEMP:-}                     # 0 = greedy, then outputs must all be equal (0.0)
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-} # (1024)
QUESTION_BEGIN=${QUESTION_BEGIN:-} # question range [begin, end) (all)
QUESTION_END=${QUESTION_END:-}
PER_TASK=${PER_TASK:-}             # N questions per task, 8 -> 48 questions (all)
WARMUP=${WARMUP:-}                 # full runs of the first question, not recorded (3)
NUM_WORKERS=${NUM_WORKERS:-}       # N > 1: the questions split across N CPU workers on Ray
NUM_GPUS_TOTAL=${NUM_GPUS_TOTAL:-} # or across GPU workers on Ray: GPUs in all (Spec-Bench's name)
NUM_GPUS_PER_MODEL=${NUM_GPUS_PER_MODEL:-}  # GPUs per worker (1: the engine uses one)
                                   # (Ray: pip install ray; RAY_ADDRESS for a cluster)
ANSWERS=${ANSWERS:-}               # where answer files go (data/$BENCH/model_answer)
DRY_RUN=${DRY_RUN:-0}              # 1: check everything and print each method's command, run none
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
# ----------------------------------------------------------------------------------------------

[ -x "$PYTHON" ] || PYTHON=python
export PYTHONPATH="$ROOT:$ROOT/inference${PYTHONPATH:+:$PYTHONPATH}"   # works without the editable install too
ARGS=(--presets "$METHODS")
pass() { if [ -n "$2" ]; then ARGS+=("$1" "$2"); fi; }   # an empty setting keeps the default
pass --model-path "$TARGET";             pass --drafter-path "$DRAFT";       pass --datastore-path "$DATASTORE"
pass --ea-model-path "$EAGLE_HEAD";      pass --eagle3-model-path "$EAGLE3_HEAD"
pass --medusa-model-path "$MEDUSA_HEADS"
pass --hydra-model-path "$HYDRA_HEADS";  pass --model-name "$MODEL_NAME";    pass --dtype "$DTYPE"
if [ -n "${DRAFT_DTYPE+set}" ]; then ARGS+=(--draft-dtype "$DRAFT_DTYPE"); fi   # '' means the target's
pass --sd2-draft-dtype "$SD2_DRAFT_DTYPE"; pass --lookup-tokens "$LOOKUP_TOKENS"; pass --lookup-first "$LOOKUP_FIRST"
pass --sd2-tree "$SD2_TREE";             pass --sd2-exits "$SD2_EXITS";      pass --sd2-thresholds "$SD2_THRESHOLDS"
pass --device "$DEVICE";                 pass --bench-name "$BENCH";         pass --temperature "$TEMP"
pass --max-new-tokens "$MAX_NEW_TOKENS"; pass --question-begin "$QUESTION_BEGIN"
pass --question-end "$QUESTION_END";     pass --questions-per-task "$PER_TASK"; pass --num-warmup "$WARMUP"
pass --num-workers "$NUM_WORKERS";       pass --num-gpus-total "$NUM_GPUS_TOTAL"
pass --num-gpus-per-model "$NUM_GPUS_PER_MODEL"; pass --answer-dir "$ANSWERS"
case "$CUDA_GRAPHS" in 0) ;; 1) ARGS+=(--cuda-graphs) ;; *) echo "error: CUDA_GRAPHS '$CUDA_GRAPHS': use 0 or 1" >&2; exit 2 ;; esac
case "$DRY_RUN" in 0) ;; 1) ARGS+=(--dry-run) ;; *) echo "error: DRY_RUN '$DRY_RUN': use 0 or 1" >&2; exit 2 ;; esac
exec "$PYTHON" -m evaluation.run_presets "${ARGS[@]}"
