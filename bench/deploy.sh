#!/usr/bin/env bash
# Progressive delivery figures (issue 4): bad-canary detection time, rollback switch time, A/A false rollbacks.
# Usage: bench/deploy.sh                      (builds release slipway into .build-bench/)
#        SLIPWAY_BIN=/path/to/slipway RUNS=5 RUNS_AA=10 bench/deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SLIPWAY_BIN:-}" ]; then
  swift build -c release --static-swift-stdlib --scratch-path .build-bench --product slipway >&2
  SLIPWAY_BIN="$PWD/.build-bench/release/slipway"
fi
export SLIPWAY_BIN
mkdir -p bench/out
python3 bench/deploy.py "$SLIPWAY_BIN" | tee bench/out/deploy.txt
