#!/usr/bin/env bash
# EAGLE-3: train a draft head for TARGET (python -m sd2train.eagle3): one decoder layer over a fusion
# of the target's low, middle and high layers, unrolled over its own outputs in training
# (training-time test), scoring the draft vocabulary. The frozen target's states and logits are
# computed on the fly each batch. Writes the head's folder (config naming the target, safetensors,
# draft_vocab.json, tokenizer, loss_log.jsonl) and its held-out agreement at depths 1..3
# (eagle_quality.json). Every setting is an environment variable, as in train_eagle.sh:
#   TARGET            target checkpoint (default: the prepared default target)
#   OUTPUT_DIR        the head's folder (default: models/eagle3-smollm2-135m for the default target,
#                     else models/eagle3-<target's folder name>)
#   DATA              ShareGPT JSON(L). Default on the CPU: the target's own replies, generated first by
#                     generate_target_replies.sh (GEN_CONVERSATIONS 1500, GEN_MINUTES 7) unless
#                     OUTPUT_DIR/replies.done says they were; with GPUs: the target's replies to
#                     ShareGPT's prompts too (EAGLE-3 trains on the target's own answers), generated
#                     on one GPU with that script's GPU settings (TARGET_REPLIES=0: DATA as is)
#   TTT_STEPS         training-time test steps (GPU 7, as EAGLE-3; CPU 3: depth 1..3, the trees a CPU drafts)
#   STEP_DECAY (0.8), FEATURE_LAYERS (default 2,L/2,L-3), DRAFT_VOCAB_SIZE (8192)
#   MIX_DATA, MIX_RATIO, CONV_TEMPLATE, MAX_CONVERSATIONS   as for SoFT
#   NPROC (default: the number of GPUs), MAX_STEPS, BATCH, GRAD_ACCUM, LR, WARMUP, EPOCHS, MAX_LENGTH,
#   MAX_MINUTES, BACKEND (fsdp|deepspeed|none), FSDP_CONFIG, DEEPSPEED_CONFIG (ZeRO-2: ZeRO-3 is
#   refused), EXTRA_ARGS (passed through; later flags win), PYTHON
# e.g.  train/scripts/train_eagle3.sh
#       MAX_STEPS=50 OUTPUT_DIR=outputs/eagle3-try train/scripts/train_eagle3.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT:$ROOT/train${PYTHONPATH:+:$PYTHONPATH}"  # works without the editable install too

TARGET=${TARGET:-$("$PYTHON" -m sd2.paths target)}
NAME=$("$PYTHON" -m sd2.paths name "$TARGET")  # the target's short name (sd2.paths.model_name)
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/models/eagle3-$NAME}
MAX_STEPS=${MAX_STEPS:-}
EXTRA_ARGS=${EXTRA_ARGS:-}
if [[ -z "${NPROC:-}" ]]; then
  NPROC=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
fi

if [[ -z "${DATA:-}" && ( "$NPROC" -eq 0 || "${TARGET_REPLIES:-1}" = 1 ) ]]; then
  # The target's own replies: resumable, and skipped once this head's folder records them as done.
  if [[ "$NPROC" -eq 0 ]]; then
    GEN=(GEN_CONVERSATIONS="${GEN_CONVERSATIONS:-1500}" GEN_MINUTES="${GEN_MINUTES:-7}")
  else
    GEN=(CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}" GEN_CONVERSATIONS="${GEN_CONVERSATIONS:-}")
  fi
  env TARGET="$TARGET" "${GEN[@]}" RECORD="$OUTPUT_DIR/replies.done" bash "$ROOT/train/scripts/generate_target_replies.sh"
  DATA=$(cat "$OUTPUT_DIR/replies.done")
fi

ARGS=(--target_model_name_or_path "$TARGET" --output_dir "$OUTPUT_DIR" ${DATA:+--data_path "$DATA"}
      ${CONV_TEMPLATE:+--conv_template "$CONV_TEMPLATE"} ${MIX_DATA:+--mix_data_path "$MIX_DATA" --mix_ratio "${MIX_RATIO:-0}"}
      ${MAX_CONVERSATIONS:+--max_train_conversations "$MAX_CONVERSATIONS"}
      ${FEATURE_LAYERS:+--feature_layers "$FEATURE_LAYERS"} --draft_vocab_size "${DRAFT_VOCAB_SIZE:-8192}"
      --step_weight_decay "${STEP_DECAY:-0.8}"
      --adam_beta2 0.95 --max_grad_norm 0.5 --weight_decay 0
      --logging_steps "${LOGGING_STEPS:-1}" --save_strategy "${SAVE_STRATEGY:-no}" --report_to none)
if [[ -n "$MAX_STEPS" ]]; then ARGS+=(--max_steps "$MAX_STEPS"); fi

if [[ "$NPROC" -gt 0 ]]; then
  # GPU: EAGLE-3's recipe (7 unrolled steps, AdamW betas 0.9/0.95, clipping 0.5, lr 5e-5 with 12,000
  # warm-up steps, 2,048 tokens, 40 epochs, micro-batch 1 with grad-accum 2), bf16 here (the
  # reference trains fp16), torchrun + FSDP (or BACKEND=deepspeed: ZeRO-2, as the reference).
  BACKEND=${BACKEND:-fsdp}
  ARGS+=(--ttt_steps "${TTT_STEPS:-7}" --bf16 True --num_train_epochs "${EPOCHS:-40}"
         --per_device_train_batch_size "${BATCH:-1}" --gradient_accumulation_steps "${GRAD_ACCUM:-2}"
         --learning_rate "${LR:-5e-5}" --lr_scheduler_type linear --warmup_steps "${WARMUP:-12000}"
         --model_max_length "${MAX_LENGTH:-2048}" --lazy_preprocess True)
  case "$BACKEND" in
    fsdp) ARGS+=(--fsdp --fsdp_config "${FSDP_CONFIG:-$ROOT/train/configs/fsdp.json}") ;;
    deepspeed) ARGS+=(--deepspeed "${DEEPSPEED_CONFIG:-$ROOT/train/configs/zero2.json}") ;;
    none) ;;
    *) echo "BACKEND must be fsdp, deepspeed or none, got '$BACKEND'" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$NPROC" -m sd2train.eagle3 "${ARGS[@]}" $EXTRA_ARGS "$@"
fi

# CPU: one process, EAGLE's CPU preset (train/README.md, "EAGLE head") with 3 unrolled steps:
# 4 x 256-token sequences a step, lr 1e-3 cosine, bf16 autocast for the frozen target; 1,500 steps
# or 25 minutes, whichever comes first.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if [[ -z "$MAX_STEPS" ]]; then ARGS+=(--max_steps 1500); fi
ARGS+=(--ttt_steps "${TTT_STEPS:-3}" --use_cpu True --bf16 "${BF16:-True}" --num_train_epochs "${EPOCHS:-1}"
       --per_device_train_batch_size "${BATCH:-4}" --gradient_accumulation_steps "${GRAD_ACCUM:-1}"
       --learning_rate "${LR:-1e-3}" --lr_scheduler_type "${SCHEDULER:-cosine}" --warmup_steps "${WARMUP:-0.04}"
       --model_max_length "${MAX_LENGTH:-256}" --max_train_minutes "${MAX_MINUTES:-25}"
       --dataloader_num_workers 0 --train_sampling_strategy group_by_length)
# shellcheck disable=SC2086
exec "$PYTHON" -m sd2train.eagle3 "${ARGS[@]}" $EXTRA_ARGS "$@"
