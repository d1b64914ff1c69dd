#!/usr/bin/env bash
# The target's own replies to training-split ShareGPT prompts, as training data for its draft
# (python -m sd2train.generate_replies). Resumable: a rerun appends to OUTPUT, skipping ids already
# there. Settings are environment variables, e.g.
#   MINUTES=10 train/scripts/generate_target_replies.sh
#   TARGET=path/to/target MAX_CONVERSATIONS=20000 train/scripts/generate_target_replies.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT/train${PYTHONPATH:+:$PYTHONPATH}"
TARGET=${TARGET:-$ROOT/models/smollm2-135m-instruct}
HAS_GPU=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))")
# CPU: bfloat16, batch 64 (fastest measured on 2 cores, train/README.md), short prompts and replies
# to fit the CPU preset's 256-token sequences. GPU: long replies for the 2048-token recipe.
if [[ "$HAS_GPU" = 1 ]]; then
  BATCH=${BATCH:-256}; MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-1024}; MAX_PROMPT_TOKENS=${MAX_PROMPT_TOKENS:-1024}
else
  BATCH=${BATCH:-64}; MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-128}; MAX_PROMPT_TOKENS=${MAX_PROMPT_TOKENS:-128}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
fi
OUTPUT=${OUTPUT:-$ROOT/outputs/target_replies/$(basename "$TARGET")-n$MAX_NEW_TOKENS.jsonl}
ARGS=(--target "$TARGET" --output "$OUTPUT" --batch-size "$BATCH" --max-new-tokens "$MAX_NEW_TOKENS"
      --max-prompt-tokens "$MAX_PROMPT_TOKENS" --temperature "${TEMPERATURE:-0}")
[[ -n "${MAX_CONVERSATIONS:-}" ]] && ARGS+=(--max-conversations "$MAX_CONVERSATIONS")
[[ -n "${MINUTES:-}" ]] && ARGS+=(--max-minutes "$MINUTES")
[[ -n "${DATA:-}" ]] && ARGS+=(--data-path "$DATA")
[[ -n "${CONV_TEMPLATE:-}" ]] && ARGS+=(--conv-template "$CONV_TEMPLATE")
[[ "${ALL_TURNS:-0}" = 1 ]] && ARGS+=(--all-turns)
# shellcheck disable=SC2086
exec "$PYTHON" -m sd2train.generate_replies "${ARGS[@]}" ${EXTRA_ARGS:-} "$@"
