#!/usr/bin/env bash
# SD2 end to end on the embedded default, in one command:
#   set-up -> default target -> the target's own replies to ShareGPT prompts (training data)
#   -> 12-layer draft -> SoFT training on them (bounded, progress bar)
#   -> exit-quality report -> Spec-Bench evaluation of AR, SD2 chain/tree and the baselines
#   -> speed.py / equal.py reports -> plots -> a summary of where everything is.
#
#   bash scripts/quickstart.sh                     # 3 questions per task, 128 new tokens, 20 min of training
#   METHODS="ar sd2_tree lookahead rest" bash scripts/quickstart.sh   # choose the methods (all: see inference/eval.sh)
#   FULL=1 bash scripts/quickstart.sh              # the full 480-question Spec-Bench (hours on a CPU)
#   TARGET=path/to/target DRAFT=path/to/trained-draft bash scripts/quickstart.sh   # your own models (skips training)
#
# Every step is skipped when its output already exists and is valid, so an interrupted run resumes:
# training restarts from its last checkpoint, evaluation from the last answered question.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PER_TASK=${PER_TASK:-3}                     # questions per task (x6 tasks); FULL=1 uses all 480
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-128}
TRAIN_MINUTES=${TRAIN_MINUTES:-20}          # wall-clock cap of the CPU training preset
GEN_CONVERSATIONS=${GEN_CONVERSATIONS:-1500}  # target replies to generate as training data (CPU) ...
GEN_MINUTES=${GEN_MINUTES:-7}               # ... or this many minutes of generation, whichever comes first
# Lookahead and REST verify ~60-token trees, slow on 2 CPU cores: opt in with METHODS on a CPU.
METHODS=${METHODS:-"ar sd2_chain sd2_tree pld sps ar_hf"}
paths() { PYTHONPATH="$ROOT" python3 -m sd2.paths "$@"; }   # the default paths (stdlib: no venv needed yet)
TARGET=${TARGET:-$(paths target)}
MODEL_NAME=$(paths name "$TARGET")   # answer files are $ANSWERS/$MODEL_NAME-<method>-<dtype>-temp-0.0.jsonl
USER_DRAFT=${DRAFT:-}
DRAFT=${DRAFT:-$(paths draft)}
ANSWERS=${ANSWERS:-$ROOT/data/spec_bench/model_answer}
DATASTORE=${DATASTORE:-$(paths datastore)}
if [ "${FULL:-0}" = 1 ]; then PER_TASK=""; MAX_NEW_TOKENS=${FULL_MAX_NEW_TOKENS:-1024}; fi
step() { printf '\n\033[1m[quickstart %s] %s\033[0m\n' "$(date +%H:%M:%S)" "$*"; }

step "1/8 set-up (.venv, pinned packages, default target)"
bash scripts/setup.sh
PY="$ROOT/.venv/bin/python"
HAS_GPU=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
if [ "$HAS_GPU" = 1 ]; then DTYPE=${DTYPE:-bfloat16}; else DTYPE=${DTYPE:-float32}; fi
echo "device: $([ "$HAS_GPU" = 1 ] && echo CUDA || echo CPU), evaluation dtype: $DTYPE"

step "2/8 training data: the target's own replies to training-split ShareGPT prompts"
if [ -n "$USER_DRAFT" ] || { [ -f "$DRAFT/model.safetensors" ] && [ -f "$DRAFT/exit_quality.json" ]; }; then
    echo "the draft needs no training; skipping"
elif [ "$HAS_GPU" = 1 ]; then
    echo "GPU: the training script generates the target's replies on the GPU first (step 3)"
else
    # Resumable: an interrupted run appends to the same file, skipping the ids already there; once
    # finished, $DRAFT/replies.done names the file and a rerun skips this step.
    TARGET="$TARGET" GEN_CONVERSATIONS="$GEN_CONVERSATIONS" GEN_MINUTES="$GEN_MINUTES" RECORD="$DRAFT/replies.done" \
        bash train/scripts/generate_target_replies.sh
fi

step "3/8 SoFT draft: first 12 layers, exits 6/9/12, trained on the target's replies"
if [ -n "$USER_DRAFT" ]; then
    echo "using your draft $DRAFT (no training)"
elif [ -f "$DRAFT/model.safetensors" ] && [ -f "$DRAFT/exit_quality.json" ]; then
    echo "$DRAFT is trained and measured; skipping"
else
    # Checkpoints every 50 steps (~1.5 min) let an interrupted run resume instead of starting over,
    # from the newest complete one (one a kill tore while saving is skipped, named on stderr).
    RESUME=$("$PY" -m sd2train.checkpoints "$DRAFT")
    # CPU: the quickstart recipe (train/configs/recipes/quickstart.yaml: cross-entropy on the replies
    # at lr 2e-3, checkpoints every 50 steps); GPU: the gpu recipe, checkpointing as often.
    if [ "$HAS_GPU" = 1 ]; then RUN_ARGS="SAVE_STRATEGY=steps"; SAVE="--save_steps 50 --save_total_limit 1"; else
        RUN_ARGS="RECIPE=quickstart MAX_MINUTES=$TRAIN_MINUTES DATA=$(cat "$DRAFT/replies.done") VOCAB_DATA="; SAVE=""; fi
    env $RUN_ARGS OUTPUT_DIR="$DRAFT" \
        EXTRA_ARGS="$SAVE ${RESUME:+--resume_from_checkpoint $RESUME} ${TRAIN_ARGS:-}" \
        bash train/scripts/train_draft_soft.sh
    rm -rf "$DRAFT"/checkpoint-*
fi

step "4/8 exit-quality report (held-out ShareGPT prompts)"
if [ ! -f "$DRAFT/exit_quality.json" ]; then
    "$PY" -m sd2train.exit_quality --draft "$DRAFT" --target "$TARGET" --output "$DRAFT/exit_quality.json"
fi
"$PY" -c "import json, sys; from sd2train.exit_quality import format_table; print(format_table(json.load(open(sys.argv[1]))))" \
    "$DRAFT/exit_quality.json"

step "5/8 REST datastore (ShareGPT, suffix array)"
if [[ " $METHODS " == *" rest "* ]] && [ ! -f "$DATASTORE" ]; then
    "$PY" scripts/build_rest_datastore.py --model-path "$TARGET" --output "$DATASTORE"
fi

step "6/8 Spec-Bench: ${PER_TASK:-all} questions per task, $MAX_NEW_TOKENS new tokens, $DTYPE"
REPORT="$ROOT/outputs/quickstart/reports-$DTYPE.txt"
mkdir -p "$(dirname "$REPORT")"
TARGET="$TARGET" MODEL_NAME="$MODEL_NAME" DRAFT="$DRAFT" DATASTORE="$DATASTORE" ANSWERS="$ANSWERS" DTYPE="$DTYPE" \
    PER_TASK="$PER_TASK" MAX_NEW_TOKENS="$MAX_NEW_TOKENS" METHODS="$METHODS" \
    bash inference/eval.sh 2>&1 | tee "$REPORT"

step "7/8 plots"
SUFFIX="$DTYPE-temp-0.0"
PLOT_ARGS=()
for m in $METHODS; do
    [ "$m" = ar ] && continue
    f="$ANSWERS/$MODEL_NAME-$m-$SUFFIX.jsonl"
    [ -f "$f" ] && PLOT_ARGS+=(--method "$m=$f")
done
"$PY" scripts/plot_results.py --base-path "$ANSWERS/$MODEL_NAME-ar-$SUFFIX.jsonl" "${PLOT_ARGS[@]}" --out-dir assets \
    --title "Spec-Bench (${PER_TASK:-all}/task, $MAX_NEW_TOKENS tokens, $DTYPE): speed-up over AR, same engine"

step "8/8 where everything is"
cat <<SUMMARY
  target              $TARGET
  training data       $(cat "$DRAFT/replies.done" 2>/dev/null || echo "none: your own draft")   (the target's replies; metadata beside them)
  draft (SoFT)        $DRAFT   (loss log: loss_log.jsonl, exit quality: exit_quality.json)
  answers             $ANSWERS/$MODEL_NAME-<method>-$SUFFIX.jsonl
  speed/equal reports $REPORT
  plots               assets/speedup.png, assets/exit_usage_*.png (data: assets/plot_data.json)
SUMMARY
grep -A9 "==== sd2_tree vs ar: speed" "$REPORT" | tail -8 || true
