# Shared by train_medusa.sh and train_hydra.sh (they set KIND); not run directly. Trains KIND draft
# heads for TARGET (python -m sd2train.heads): the frozen target's last-layer features on the fly,
# Medusa-1's loss. Writes the heads' folder (config naming the target and the draft vocabulary,
# safetensors, tokenizer, loss_log.jsonl) and their held-out accuracy by rank (heads_quality.json,
# which shapes Medusa's static tree at inference). Every setting is an environment variable:
#   TARGET            target checkpoint (default: the prepared default target)
#   OUTPUT_DIR        the heads' folder (default: models/KIND-smollm2-135m for the default target,
#                     else models/KIND-<target's folder name>)
#   DATA              ShareGPT JSON(L). Default on the CPU: the target's own replies
#                     (outputs/target_replies/<target>-n<REPLY_TOKENS>.jsonl), generated first by
#                     generate_target_replies.sh (GEN_CONVERSATIONS 1500, GEN_MINUTES 7, and its other
#                     settings) unless OUTPUT_DIR/replies.done says they were; with GPUs: ShareGPT, as
#                     Medusa's own recipe (set DATA for the target's replies there too)
#   MIX_DATA, MIX_RATIO, CONV_TEMPLATE, MAX_CONVERSATIONS   as for SoFT
#   NUM_HEADS (4), DRAFT_VOCAB_SIZE (8192; 0 = the whole vocabulary), DECAY (0.8: head k's loss weight decay**k)
#   NPROC (default: the number of GPUs), MAX_STEPS, CPU_STEPS (the CPU preset's steps, 1400), BATCH,
#   GRAD_ACCUM, LR, WARMUP, EPOCHS, MAX_LENGTH, MAX_MINUTES, BACKEND (fsdp|deepspeed|none),
#   FSDP_CONFIG (default train/configs/fsdp_heads.json), DEEPSPEED_CONFIG (ZeRO-2: ZeRO-3 is refused),
#   EXTRA_ARGS (passed through; later flags win), PYTHON
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT:$ROOT/train${PYTHONPATH:+:$PYTHONPATH}"  # works without the editable install too

TARGET=${TARGET:-$("$PYTHON" -m sd2.paths target)}
NAME=$("$PYTHON" -m sd2.paths name "$TARGET")  # the target's short name (sd2.paths.model_name)
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/models/$KIND-$NAME}
MAX_STEPS=${MAX_STEPS:-}
EXTRA_ARGS=${EXTRA_ARGS:-}
if [[ -z "${NPROC:-}" ]]; then
  NPROC=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
fi

if [[ -z "${DATA:-}" && "$NPROC" -eq 0 ]]; then
  # The target's own replies, as the SoFT presets train on: generation is resumable and skipped
  # once this folder records it as done.
  TARGET="$TARGET" GEN_CONVERSATIONS="${GEN_CONVERSATIONS:-1500}" GEN_MINUTES="${GEN_MINUTES:-7}" \
    RECORD="$OUTPUT_DIR/replies.done" bash "$ROOT/train/scripts/generate_target_replies.sh"
  DATA=$(cat "$OUTPUT_DIR/replies.done")
fi

ARGS=(--kind "$KIND" --target_model_name_or_path "$TARGET" --output_dir "$OUTPUT_DIR" ${DATA:+--data_path "$DATA"}
      ${CONV_TEMPLATE:+--conv_template "$CONV_TEMPLATE"} ${MIX_DATA:+--mix_data_path "$MIX_DATA" --mix_ratio "${MIX_RATIO:-0}"}
      ${MAX_CONVERSATIONS:+--max_train_conversations "$MAX_CONVERSATIONS"}
      --num_heads "${NUM_HEADS:-4}" --draft_vocab_size "${DRAFT_VOCAB_SIZE:-8192}" --head_loss_decay "${DECAY:-0.8}"
      --weight_decay 0 --logging_steps "${LOGGING_STEPS:-1}" --save_strategy "${SAVE_STRATEGY:-no}" --report_to none)
if [[ -n "$MAX_STEPS" ]]; then ARGS+=(--max_steps "$MAX_STEPS"); fi

if [[ "$NPROC" -gt 0 ]]; then
  # GPU: Medusa-1's recipe (2 epochs, batch 8, grad-accum 4, lr 1e-3 cosine, warm-up 0.1, 2,048
  # tokens, bf16), for Hydra too; torchrun + FSDP (each projection its own shard unit) or
  # BACKEND=deepspeed (ZeRO-2).
  BACKEND=${BACKEND:-fsdp}
  ARGS+=(--bf16 True --num_train_epochs "${EPOCHS:-2}" --per_device_train_batch_size "${BATCH:-8}"
         --gradient_accumulation_steps "${GRAD_ACCUM:-4}" --learning_rate "${LR:-1e-3}"
         --lr_scheduler_type cosine --warmup_steps "${WARMUP:-0.1}"
         --model_max_length "${MAX_LENGTH:-2048}" --lazy_preprocess True)
  case "$BACKEND" in
    fsdp) ARGS+=(--fsdp --fsdp_config "${FSDP_CONFIG:-$ROOT/train/configs/fsdp_heads.json}") ;;
    deepspeed) ARGS+=(--deepspeed "${DEEPSPEED_CONFIG:-$ROOT/train/configs/zero2.json}") ;;
    none) ;;
    *) echo "BACKEND must be fsdp, deepspeed or none, got '$BACKEND'" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$NPROC" -m sd2train.heads "${ARGS[@]}" $EXTRA_ARGS "$@"
fi

# CPU: one process, the preset sized for the default target on 2 cores (train/README.md, "Medusa
# and Hydra heads"): 4 x 256-token sequences a step from up to 8,000 conversations (5,600 sequences
# in 1,400 steps: each seen once), the target's forward in bf16, lr 1e-3 cosine; CPU_STEPS steps or
# 15 minutes, whichever comes first.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if [[ -z "$MAX_STEPS" ]]; then ARGS+=(--max_steps "$CPU_STEPS"); fi
ARGS+=(--use_cpu True --bf16 "${BF16:-True}" --num_train_epochs "${EPOCHS:-1}" --per_device_train_batch_size "${BATCH:-4}"
       --gradient_accumulation_steps "${GRAD_ACCUM:-1}" --learning_rate "${LR:-1e-3}"
       --lr_scheduler_type "${SCHEDULER:-cosine}" --warmup_steps "${WARMUP:-0.04}"
       --model_max_length "${MAX_LENGTH:-256}" --max_train_minutes "${MAX_MINUTES:-15}"
       --dataloader_num_workers 0 --train_sampling_strategy group_by_length)
if [[ -z "${MAX_CONVERSATIONS:-}" ]]; then ARGS+=(--max_train_conversations 8000); fi
# shellcheck disable=SC2086
exec "$PYTHON" -m sd2train.heads "${ARGS[@]}" $EXTRA_ARGS "$@"
