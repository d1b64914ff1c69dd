#!/usr/bin/env bash
# SFT baseline: the same draft trained on its last layer only. Settings are environment
# variables; see train_draft_common.sh. Example:
#   MAX_STEPS=10 OUTPUT_DIR=outputs/try train/scripts/train_draft_sft.sh
MODE=sft
source "$(dirname "${BASH_SOURCE[0]}")/train_draft_common.sh"
