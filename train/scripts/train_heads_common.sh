# Shared by train_medusa.sh and train_hydra.sh (they set KIND); not run directly. Trains KIND draft
# heads for TARGET (python -m sd2train.heads): the frozen target's last-layer features on the fly,
# Medusa-1's loss. Writes the heads' folder (config naming the target and the draft vocabulary,
# safetensors, tokenizer, loss_log.jsonl) and their held-out accuracy by rank (heads_quality.json,
# which shapes Medusa's static tree at inference). The settings are a recipe (RECIPE: heads_gpu with
# GPUs, else heads_cpu; train/configs/recipes/), which these environment variables override where set:
#   TARGET            target checkpoint (default: the prepared default target)
#   OUTPUT_DIR        the heads' folder (default: models/KIND-smollm2-135m for the default target,
#                     else models/KIND-<target's folder name>)
#   DATA              ShareGPT JSON(L). Default on the CPU: the target's own replies
#                     (outputs/target_replies/<target>-n<REPLY_TOKENS>.jsonl), generated first by
#                     generate_target_replies.sh (GEN_CONVERSATIONS 1500, GEN_MINUTES 7, and its other
#                     settings) unless OUTPUT_DIR/replies.done says they were; with GPUs: ShareGPT, as
#                     Medusa's own recipe (set DATA for the target's replies there too)
#   MIX_DATA, MIX_RATIO, CONV_TEMPLATE, MAX_CONVERSATIONS   as for SoFT
#   NUM_HEADS, DRAFT_VOCAB_SIZE (0 = the whole vocabulary), DECAY (head k's loss weight decay**k)
#   NPROC (default: the number of GPUs), MAX_STEPS, BATCH, GRAD_ACCUM, LR, SCHEDULER, WARMUP, EPOCHS,
#   MAX_LENGTH, MAX_MINUTES, BF16, BACKEND (fsdp|deepspeed|none),
#   FSDP_CONFIG (default train/configs/fsdp_heads.json), DEEPSPEED_CONFIG (ZeRO-2: ZeRO-3 is refused),
#   EXTRA_ARGS (passed through; later flags win), PYTHON
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/models/$KIND-$NAME}
if [[ -z "${DATA:-}" && "$NPROC" -eq 0 ]]; then
  target_replies GEN_CONVERSATIONS="${GEN_CONVERSATIONS:-1500}" GEN_MINUTES="${GEN_MINUTES:-7}"
fi
if [[ "$NPROC" -gt 0 ]]; then RECIPE=${RECIPE:-heads_gpu}; else RECIPE=${RECIPE:-heads_cpu}; fi
ARGS=(--recipe "$RECIPE" --kind "$KIND" --target_model_name_or_path "$TARGET" --output_dir "$OUTPUT_DIR")
override_common
override NUM_HEADS --num_heads; override DRAFT_VOCAB_SIZE --draft_vocab_size; override DECAY --head_loss_decay
launch sd2train.heads "$ROOT/train/configs/fsdp_heads.json" "$ROOT/train/configs/zero2.json" "$@"
