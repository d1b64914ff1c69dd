#!/usr/bin/env bash
# Run the test suite (sets everything up first). Extra arguments go to pytest, e.g. -m "not slow".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest "$@"
