#!/usr/bin/env bash
# The long CPU preset: the best sorted draft two CPU cores make in about two hours, in one
# resumable command (measured in train/README.md):
#   1. the target's own replies to training-split ShareGPT prompts (sd2train.generate_replies):
#      up to GEN_CONVERSATIONS replies or GEN_MINUTES minutes, appended to REPLIES;
#   2. SoFT on them (train_draft_soft.sh's CPU preset, longer): cross-entropy on the target's own
#      greedy tokens, which measured better than distillation at equal steps and is 1.5x faster per
#      step (no target pass; train/README.md); lr 1e-3 (3.5-3.9 points more at every exit than
#      3e-4 at 3,689 steps); STEPS steps or TRAIN_MINUTES minutes, a checkpoint every 100 steps;
#   3. the held-out exit-quality report, whose thresholds go into the draft's config.
# Interrupted, a rerun continues where it stopped: generation skips the ids already written (and
# is skipped once done), training resumes from its last checkpoint with its time budget.
#   train/scripts/train_draft_soft_long_cpu.sh
#   GEN_MINUTES=30 TRAIN_MINUTES=45 OUTPUT_DIR=models/my-draft train/scripts/train_draft_soft_long_cpu.sh
# Also: every setting of generate_target_replies.sh (REPLIES, PROMPTS, GEN_BATCH, REPLY_TOKENS,
# GEN_ARGS, ...) and of train_draft_common.sh (DRAFT, DRAFT_LAYERS, EXITS, LR, BATCH, ...), and
# TRAIN_ARGS (extra trainer flags).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT:$ROOT/train${PYTHONPATH:+:$PYTHONPATH}"  # works without the editable install too
TARGET=${TARGET:-$("$PYTHON" -m sd2.paths target)}
OUTPUT_DIR=${OUTPUT_DIR:-$("$PYTHON" -m sd2.paths draft)-long}
GEN_CONVERSATIONS=${GEN_CONVERSATIONS:-12000}
GEN_MINUTES=${GEN_MINUTES:-55}
STEPS=${STEPS:-4500}
TRAIN_MINUTES=${TRAIN_MINUTES:-60}

if [[ -f "$OUTPUT_DIR/exit_quality.json" ]]; then
  echo "[long preset] $OUTPUT_DIR is trained and measured; nothing to do"; exit 0
fi
mkdir -p "$OUTPUT_DIR"
TARGET="$TARGET" GEN_CONVERSATIONS="$GEN_CONVERSATIONS" GEN_MINUTES="$GEN_MINUTES" \
  RECORD="$OUTPUT_DIR/replies.done" bash train/scripts/generate_target_replies.sh
REPLIES=$(cat "$OUTPUT_DIR/replies.done")
# the newest complete checkpoint (one a kill tore while saving is skipped, named on stderr)
RESUME=$("$PYTHON" -m sd2train.checkpoints "$OUTPUT_DIR")
# the long_cpu recipe (train/configs/recipes/long_cpu.yaml: lr 1e-3, cross-entropy, a checkpoint every 100 steps)
TARGET="$TARGET" DATA="$REPLIES" VOCAB_DATA="" RECIPE="${RECIPE:-long_cpu}" OUTPUT_DIR="$OUTPUT_DIR" MAX_STEPS="$STEPS" \
  MAX_MINUTES="$TRAIN_MINUTES" MAX_CONVERSATIONS="${MAX_CONVERSATIONS:-$GEN_CONVERSATIONS}" \
  EXTRA_ARGS="${RESUME:+--resume_from_checkpoint $RESUME} ${TRAIN_ARGS:-}" \
  bash train/scripts/train_draft_soft.sh
rm -rf "$OUTPUT_DIR"/checkpoint-*
