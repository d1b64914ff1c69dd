#!/usr/bin/env bash
# EAGLE: train a draft head for TARGET (python -m sd2train.eagle): one decoder layer over the
# target's last-layer features, which the frozen target computes on the fly each batch. Writes the
# head's folder (config naming the target, safetensors, tokenizer, loss_log.jsonl) and its held-out
# agreement (eagle_quality.json). Every setting is an environment variable, as in train_draft_common.sh:
#   TARGET            target checkpoint (default: the prepared default target)
#   OUTPUT_DIR        the head's folder (default: models/eagle-smollm2-135m for the default target,
#                     else models/eagle-<target's folder name>)
#   DATA              ShareGPT JSON(L). Default on the CPU: the target's own replies
#                     (outputs/target_replies/<target>-n<REPLY_TOKENS>.jsonl), generated first by
#                     generate_target_replies.sh (GEN_CONVERSATIONS 1500, GEN_MINUTES 7, and its other
#                     settings) unless OUTPUT_DIR/replies.done says they were; with GPUs: ShareGPT, as
#                     EAGLE's own recipe (set DATA for the target's replies there too)
#   MIX_DATA, MIX_RATIO, CONV_TEMPLATE, MAX_CONVERSATIONS   as for SoFT
#   FEATURE_WEIGHT (1.0), TOKEN_WEIGHT (GPU 0.1, CPU 1.0), FEATURE_NOISE (0.2)   EAGLE's v_w, p_w and
#                     uniform noise (the CPU preset weighs the token term 10x: measured better, README)
#   NPROC (default: the number of GPUs), MAX_STEPS, BATCH, GRAD_ACCUM, LR, WARMUP, EPOCHS, MAX_LENGTH,
#   MAX_MINUTES, BACKEND (fsdp|deepspeed|none), FSDP_CONFIG, DEEPSPEED_CONFIG (ZeRO-2: ZeRO-3 is
#   refused), EXTRA_ARGS (passed through; later flags win), PYTHON
# e.g.  train/scripts/train_eagle.sh
#       MAX_STEPS=50 OUTPUT_DIR=outputs/eagle-try train/scripts/train_eagle.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT:$ROOT/train${PYTHONPATH:+:$PYTHONPATH}"  # works without the editable install too

TARGET=${TARGET:-$("$PYTHON" -m sd2.paths target)}
NAME=$("$PYTHON" -m sd2.paths name "$TARGET")  # the target's short name (sd2.paths.model_name)
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/models/eagle-$NAME}
MAX_STEPS=${MAX_STEPS:-}
EXTRA_ARGS=${EXTRA_ARGS:-}
if [[ -z "${NPROC:-}" ]]; then
  NPROC=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
fi

if [[ -z "${DATA:-}" && "$NPROC" -eq 0 ]]; then
  # The target's own replies, as the SoFT presets train on: generation is resumable and skipped
  # once this head's folder records it as done.
  TARGET="$TARGET" GEN_CONVERSATIONS="${GEN_CONVERSATIONS:-1500}" GEN_MINUTES="${GEN_MINUTES:-7}" \
    RECORD="$OUTPUT_DIR/replies.done" bash "$ROOT/train/scripts/generate_target_replies.sh"
  DATA=$(cat "$OUTPUT_DIR/replies.done")
fi

ARGS=(--target_model_name_or_path "$TARGET" --output_dir "$OUTPUT_DIR" ${DATA:+--data_path "$DATA"}
      ${CONV_TEMPLATE:+--conv_template "$CONV_TEMPLATE"} ${MIX_DATA:+--mix_data_path "$MIX_DATA" --mix_ratio "${MIX_RATIO:-0}"}
      ${MAX_CONVERSATIONS:+--max_train_conversations "$MAX_CONVERSATIONS"}
      --feature_weight "${FEATURE_WEIGHT:-1.0}" --feature_noise "${FEATURE_NOISE:-0.2}"
      --adam_beta2 0.95 --max_grad_norm 0.5 --weight_decay 0
      --logging_steps "${LOGGING_STEPS:-1}" --save_strategy "${SAVE_STRATEGY:-no}" --report_to none)
if [[ -n "$MAX_STEPS" ]]; then ARGS+=(--max_steps "$MAX_STEPS"); fi

if [[ "$NPROC" -gt 0 ]]; then
  # GPU: EAGLE's recipe (20 epochs, batch 4, lr 3e-5 with 2,000 linear warm-up steps, AdamW betas
  # 0.9/0.95, clipping 0.5, 2,048 tokens, bf16), torchrun + FSDP (or BACKEND=deepspeed: ZeRO-2).
  BACKEND=${BACKEND:-fsdp}
  ARGS+=(--token_weight "${TOKEN_WEIGHT:-0.1}" --bf16 True --num_train_epochs "${EPOCHS:-20}" --per_device_train_batch_size "${BATCH:-4}"
         --gradient_accumulation_steps "${GRAD_ACCUM:-1}" --learning_rate "${LR:-3e-5}"
         --lr_scheduler_type linear --warmup_steps "${WARMUP:-2000}"
         --model_max_length "${MAX_LENGTH:-2048}" --lazy_preprocess True)
  case "$BACKEND" in
    fsdp) ARGS+=(--fsdp --fsdp_config "${FSDP_CONFIG:-$ROOT/train/configs/fsdp.json}") ;;
    deepspeed) ARGS+=(--deepspeed "${DEEPSPEED_CONFIG:-$ROOT/train/configs/zero2.json}") ;;
    none) ;;
    *) echo "BACKEND must be fsdp, deepspeed or none, got '$BACKEND'" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$NPROC" -m sd2train.eagle "${ARGS[@]}" $EXTRA_ARGS "$@"
fi

# CPU: one process, the preset sized for the default target on 2 cores (train/README.md, "EAGLE
# head"): 4 x 256-token sequences a step (~0.8 s on 2 idle cores, the target's forward in bf16
# included), lr 1e-3 cosine, the token term weighted 1.0 (EAGLE's 0.1 was made for normed
# features, ours are the target's raw ones, ~17x larger); 1,500 steps or 25 minutes, whichever
# comes first; every training conversation (no subset).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if [[ -z "$MAX_STEPS" ]]; then ARGS+=(--max_steps 1500); fi
ARGS+=(--token_weight "${TOKEN_WEIGHT:-1.0}" --use_cpu True --bf16 "${BF16:-True}" --num_train_epochs "${EPOCHS:-1}"
       --per_device_train_batch_size "${BATCH:-4}" --gradient_accumulation_steps "${GRAD_ACCUM:-1}"
       --learning_rate "${LR:-1e-3}" --lr_scheduler_type "${SCHEDULER:-cosine}" --warmup_steps "${WARMUP:-0.04}"
       --model_max_length "${MAX_LENGTH:-256}" --max_train_minutes "${MAX_MINUTES:-25}"
       --dataloader_num_workers 0 --train_sampling_strategy group_by_length)
# shellcheck disable=SC2086
exec "$PYTHON" -m sd2train.eagle "${ARGS[@]}" $EXTRA_ARGS "$@"
