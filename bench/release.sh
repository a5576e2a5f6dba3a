#!/usr/bin/env bash
# Release of a 200 MB directory (pack + hash + sign) against `tar | sha256sum` of the same directory.
#   bench/release.sh                 # builds release slipway into .build-bench unless SLIPWAY_BIN is set
#   SIZE_MB=50 bench/release.sh      # a smaller tree for a quick check
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/out}
SIZE_MB=${SIZE_MB:-200}
RUNS=${RUNS:-5}
command -v hyperfine >/dev/null || { apt-get update >/dev/null && apt-get install -y hyperfine >/dev/null; }
if [[ -z ${SLIPWAY_BIN:-} ]]; then
    (cd "$ROOT" && swift build -c release --static-swift-stdlib --scratch-path .build-bench --product slipway >&2)
    SLIPWAY_BIN="$(cd "$ROOT" && swift build -c release --static-swift-stdlib --scratch-path .build-bench --show-bin-path)/slipway"
fi
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/slipway-release-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# A tree like a real build output: many files of mixed sizes, SIZE_MB in total, incompressible.
python3 - "$WORK/tree" "$SIZE_MB" <<'PY'
import os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) * 1024 * 1024
rng = random.Random(7)
written, n = 0, 0
while written < total:
    size = min(total - written, rng.choice([4096, 65536, 1 << 20, 8 << 20]))
    directory = os.path.join(root, f"dir{n % 17}", f"sub{n % 5}")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"file{n}.bin"), "wb") as f:
        f.write(rng.randbytes(size))
    written += size
    n += 1
print(f"{n} files, {written // (1 << 20)} MiB", file=sys.stderr)
PY
cd "$WORK"
sync
hyperfine --warmup 1 --runs "$RUNS" --export-json "$OUT/e-release.json" \
    --prepare "rm -rf $WORK/.slipway/artifacts" \
    -n slipway "$SLIPWAY_BIN artifacts digest --data-dir $WORK/.slipway tree --sign" \
    -n tar-sha256sum "tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - -C tree . | sha256sum" \
    -n tar-to-file-then-sha256sum "tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf $WORK/t.tar -C tree . && sha256sum $WORK/t.tar && rm $WORK/t.tar"
python3 - "$OUT/e-release.json" "$SIZE_MB" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
s = results["slipway"]["mean"]
print("\n| command | mean ± σ | MB/s |\n|---|---|---|")
for name, r in results.items():
    print(f"| {name} | {r['mean']*1000:.0f} ms ± {r['stddev']*1000:.0f} ms | {int(sys.argv[2]) / r['mean']:.0f} |")
for peer in ["tar-sha256sum", "tar-to-file-then-sha256sum"]:
    ratio = s / results[peer]["mean"]
    print(f"\nslipway / {peer}: {ratio:.2f}× (target ≤ 1.3×: {'PASS' if ratio <= 1.3 else 'MISS'})")
PY
