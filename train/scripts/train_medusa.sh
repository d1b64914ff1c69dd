#!/usr/bin/env bash
# Medusa-1: K draft heads (default 4) on the frozen target's last hidden state, each a residual
# SiLU block and a projection over the draft vocabulary. Settings are environment variables; see
# train_heads_common.sh. Examples:
#   train/scripts/train_medusa.sh                                   # the CPU preset on the default target
#   MAX_STEPS=50 OUTPUT_DIR=outputs/medusa-try train/scripts/train_medusa.sh
KIND=medusa
source "$(dirname "${BASH_SOURCE[0]}")/train_heads_common.sh"
