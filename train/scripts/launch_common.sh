# Sourced by every training launcher (train_draft_common.sh, train_eagle.sh, train_eagle3.sh,
# train_heads_common.sh) and by generate_target_replies.sh; not run directly. Launchers only
# launch: the settings are recipe files (train/configs/recipes/), which environment variables of
# the names below override where set.
# It sets ROOT, PYTHON (the project's .venv if there), TARGET (default: the prepared default target),
# NAME (the target's short name), NPROC (default: the number of GPUs), EXTRA_ARGS and ARGS, and
# defines what the launchers share.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT:$ROOT/train${PYTHONPATH:+:$PYTHONPATH}"  # works without the editable install too
TARGET=${TARGET:-$("$PYTHON" -m sd2.paths target)}
NAME=$("$PYTHON" -m sd2.paths name "$TARGET")  # sd2.paths.model_name: smollm2-135m for the default target
if [[ -z "${NPROC:-}" ]]; then
  NPROC=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
fi
EXTRA_ARGS=${EXTRA_ARGS:-}  # passed through after everything else (the last flag wins)
ARGS=()

# override VARIABLE --flag: the variable's value for the flag, where the variable is set.
override() { if [[ -n "${!1:-}" ]]; then ARGS+=("$2" "${!1}"); fi; }

# The data and schedule variables every trainer takes (they override its recipe).
override_common() {
  override DATA --data_path;                override CONV_TEMPLATE --conv_template
  if [[ -n "${MIX_DATA:-}" ]]; then ARGS+=(--mix_data_path "$MIX_DATA" --mix_ratio "${MIX_RATIO:-0}"); fi
  override MAX_CONVERSATIONS --max_train_conversations
  override MAX_STEPS --max_steps;           override MAX_MINUTES --max_train_minutes
  override LR --learning_rate;              override SCHEDULER --lr_scheduler_type;  override WARMUP --warmup_steps
  override BATCH --per_device_train_batch_size; override GRAD_ACCUM --gradient_accumulation_steps
  override EPOCHS --num_train_epochs;       override MAX_LENGTH --model_max_length;  override BF16 --bf16
  override SAVE_STRATEGY --save_strategy;   override LOGGING_STEPS --logging_steps
}

# target_replies [VARIABLE=value ...]: DATA becomes the target's own replies, generated first by
# generate_target_replies.sh with these settings (resumable; skipped once OUTPUT_DIR/replies.done
# records them).
target_replies() {
  env TARGET="$TARGET" RECORD="$OUTPUT_DIR/replies.done" "$@" bash "$ROOT/train/scripts/generate_target_replies.sh"
  DATA=$(cat "$OUTPUT_DIR/replies.done")
}

# launch MODULE FSDP_CONFIG ZERO_CONFIG [flags...]: python -m MODULE with ARGS, EXTRA_ARGS and the
# flags: with GPUs under torchrun with FSDP (FSDP_CONFIG, or $FSDP_CONFIG) or BACKEND=deepspeed
# (ZERO_CONFIG, or $DEEPSPEED_CONFIG) or BACKEND=none; on a CPU one process on OMP_NUM_THREADS cores.
launch() {
  local module=$1 fsdp_config=$2 zero_config=$3
  shift 3
  if [[ "$NPROC" -gt 0 ]]; then
    case "${BACKEND:-fsdp}" in
      fsdp) ARGS+=(--fsdp --fsdp_config "${FSDP_CONFIG:-$fsdp_config}") ;;
      deepspeed) ARGS+=(--deepspeed "${DEEPSPEED_CONFIG:-$zero_config}") ;;
      none) ;;
      *) echo "BACKEND must be fsdp, deepspeed or none, got '$BACKEND'" >&2; exit 2 ;;
    esac
    # shellcheck disable=SC2086
    exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$NPROC" -m "$module" "${ARGS[@]}" $EXTRA_ARGS "$@"
  fi
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
  # shellcheck disable=SC2086
  exec "$PYTHON" -m "$module" "${ARGS[@]}" $EXTRA_ARGS "$@"
}
