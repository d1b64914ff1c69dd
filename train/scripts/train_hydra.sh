#!/usr/bin/env bash
# Hydra (its MLP variant): K sequentially dependent draft heads (default 4); head k also reads the
# embeddings of the k + 1 tokens before its own (the true ones in training). Settings are
# environment variables; see train_heads_common.sh. Examples:
#   train/scripts/train_hydra.sh                                    # the CPU preset on the default target
#   MAX_STEPS=50 OUTPUT_DIR=outputs/hydra-try train/scripts/train_hydra.sh
KIND=hydra
source "$(dirname "${BASH_SOURCE[0]}")/train_heads_common.sh"
