#!/usr/bin/env bash
# EAGLE: train a draft head for TARGET (python -m sd2train.eagle): one decoder layer over the
# target's last-layer features, which the frozen target computes on the fly each batch. Writes the
# head's folder (config naming the target, safetensors, tokenizer, loss_log.jsonl) and its held-out
# agreement (eagle_quality.json). The settings are a recipe (RECIPE: eagle_gpu with GPUs, else
# eagle_cpu; train/configs/recipes/), which these environment variables override where set:
#   TARGET            target checkpoint (default: the prepared default target)
#   OUTPUT_DIR        the head's folder (default: models/eagle-smollm2-135m for the default target,
#                     else models/eagle-<target's folder name>)
#   DATA              ShareGPT JSON(L). Default on the CPU: the target's own replies
#                     (outputs/target_replies/<target>-n<REPLY_TOKENS>.jsonl), generated first by
#                     generate_target_replies.sh (GEN_CONVERSATIONS 1500, GEN_MINUTES 7, and its other
#                     settings) unless OUTPUT_DIR/replies.done says they were; with GPUs: ShareGPT, as
#                     EAGLE's own recipe (set DATA for the target's replies there too)
#   MIX_DATA, MIX_RATIO, CONV_TEMPLATE, MAX_CONVERSATIONS   as for SoFT
#   FEATURE_WEIGHT, TOKEN_WEIGHT, FEATURE_NOISE   EAGLE's v_w, p_w and uniform noise
#   NPROC (default: the number of GPUs), MAX_STEPS, BATCH, GRAD_ACCUM, LR, SCHEDULER, WARMUP, EPOCHS,
#   MAX_LENGTH, MAX_MINUTES, BF16, BACKEND (fsdp|deepspeed|none), FSDP_CONFIG, DEEPSPEED_CONFIG
#   (ZeRO-2: ZeRO-3 is refused), EXTRA_ARGS (passed through; later flags win), PYTHON
# e.g.  train/scripts/train_eagle.sh
#       MAX_STEPS=50 OUTPUT_DIR=outputs/eagle-try train/scripts/train_eagle.sh
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/models/eagle-$NAME}
if [[ -z "${DATA:-}" && "$NPROC" -eq 0 ]]; then
  target_replies GEN_CONVERSATIONS="${GEN_CONVERSATIONS:-1500}" GEN_MINUTES="${GEN_MINUTES:-7}"
fi
if [[ "$NPROC" -gt 0 ]]; then RECIPE=${RECIPE:-eagle_gpu}; else RECIPE=${RECIPE:-eagle_cpu}; fi
ARGS=(--recipe "$RECIPE" --target_model_name_or_path "$TARGET" --output_dir "$OUTPUT_DIR")
override_common
override FEATURE_WEIGHT --feature_weight; override TOKEN_WEIGHT --token_weight; override FEATURE_NOISE --feature_noise
launch sd2train.eagle "$ROOT/train/configs/fsdp.json" "$ROOT/train/configs/zero2.json" "$@"
