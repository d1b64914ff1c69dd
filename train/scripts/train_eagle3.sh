#!/usr/bin/env bash
# EAGLE-3: train a draft head for TARGET (python -m sd2train.eagle3): one decoder layer fed a fusion
# of the target's low, middle and high layers' features, trained with training-time test (the head
# unrolled over its own predictions), over a reduced draft vocabulary. Writes the head's folder
# (config naming the target and the vocabulary, safetensors, tokenizer, loss_log.jsonl) and its
# held-out agreement (eagle_quality.json). The settings are a recipe (RECIPE: eagle3_gpu with GPUs,
# else eagle3_cpu; train/configs/recipes/), which these environment variables override where set:
#   TARGET, OUTPUT_DIR (default: models/eagle3-<target's short name>)
#   DATA              ShareGPT JSON(L). Default: the target's own replies (EAGLE-3 trains on them),
#                     generated first by generate_target_replies.sh unless OUTPUT_DIR/replies.done says
#                     they were (on the CPU: GEN_CONVERSATIONS 1500, GEN_MINUTES 7; with GPUs on one
#                     GPU, every prompt; TARGET_REPLIES=0 trains on ShareGPT's replies there)
#   MIX_DATA, MIX_RATIO, CONV_TEMPLATE, MAX_CONVERSATIONS   as for SoFT
#   TTT_STEPS, STEP_DECAY, FEATURE_LAYERS, DRAFT_VOCAB_SIZE   unrolled steps, their loss decay, the
#                     fused layers (default: low, middle, high), the draft vocabulary's size
#   NPROC, MAX_STEPS, BATCH, GRAD_ACCUM, LR, SCHEDULER, WARMUP, EPOCHS, MAX_LENGTH, MAX_MINUTES, BF16,
#   BACKEND (fsdp|deepspeed|none), FSDP_CONFIG, DEEPSPEED_CONFIG, EXTRA_ARGS, PYTHON
# e.g.  train/scripts/train_eagle3.sh
#       MAX_STEPS=50 OUTPUT_DIR=outputs/eagle3-try train/scripts/train_eagle3.sh
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/models/eagle3-$NAME}
if [[ -z "${DATA:-}" && ( "$NPROC" -eq 0 || "${TARGET_REPLIES:-1}" = 1 ) ]]; then
  if [[ "$NPROC" -eq 0 ]]; then
    target_replies GEN_CONVERSATIONS="${GEN_CONVERSATIONS:-1500}" GEN_MINUTES="${GEN_MINUTES:-7}"
  else
    target_replies CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}" GEN_CONVERSATIONS="${GEN_CONVERSATIONS:-}"
  fi
fi
if [[ "$NPROC" -gt 0 ]]; then RECIPE=${RECIPE:-eagle3_gpu}; else RECIPE=${RECIPE:-eagle3_cpu}; fi
ARGS=(--recipe "$RECIPE" --target_model_name_or_path "$TARGET" --output_dir "$OUTPUT_DIR")
override_common
override TTT_STEPS --ttt_steps; override STEP_DECAY --step_weight_decay
override FEATURE_LAYERS --feature_layers; override DRAFT_VOCAB_SIZE --draft_vocab_size
launch sd2train.eagle3 "$ROOT/train/configs/fsdp.json" "$ROOT/train/configs/zero2.json" "$@"
