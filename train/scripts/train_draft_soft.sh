#!/usr/bin/env bash
# SoFT: train every exit of a sorted draft (default: the default target's first 12 layers, exits
# 6,9,12). Settings are environment variables; see train_draft_common.sh. Example:
#   MAX_STEPS=10 OUTPUT_DIR=outputs/try train/scripts/train_draft_soft.sh
MODE=soft
source "$(dirname "${BASH_SOURCE[0]}")/train_draft_common.sh"
