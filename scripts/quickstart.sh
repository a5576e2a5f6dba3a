#!/usr/bin/env bash
# Quick start: installs what the build needs (when missing), builds Slipway, runs `slipway demo` (a whole
# delivery: build, release, canary with analysis, automatic rollback), then the example pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build -c release --static-swift-stdlib --product slipway
bin=".build/release/slipway"
echo "== slipway demo"
"$bin" demo
echo
echo "== slipway validate examples/shop/slipway.yml"
"$bin" validate examples/shop/slipway.yml
echo "== slipway run --file examples/shop/slipway.yml"
"$bin" run --file examples/shop/slipway.yml
echo
echo "== again: the unchanged build job is restored from the cache"
"$bin" run --file examples/shop/slipway.yml --plain | grep -E "build|run #"
echo
echo "Try: $bin history --file examples/shop/slipway.yml · $bin explain build --file examples/shop/slipway.yml · $bin logs --file examples/shop/slipway.yml"
