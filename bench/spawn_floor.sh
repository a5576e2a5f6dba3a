#!/usr/bin/env bash
# The floor under the wide DAG (issue 2, (b)): what starting and reaping N no-op processes two at a time costs
# by itself with make's way (fork + exec) and with Slipway's (clone(CLONE_VM) + exec, a pidfd, a pipe each for
# stdout and stderr), beside make -j2 on the same N targets. See bench/spawn_floor.c.
#
#   bash bench/spawn_floor.sh            # N=1000, 20 runs each
#   N=200 RUNS=5 bash bench/spawn_floor.sh
set -euo pipefail
N=${N:-1000}
RUNS=${RUNS:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for tool in cc make hyperfine; do command -v "$tool" >/dev/null || { echo "spawn_floor: needs $tool" >&2; exit 1; }; done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/slipway-spawn-floor.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cc -O2 -Wall -o "$WORK/spawn_floor" "$ROOT/bench/spawn_floor.c"
{
    echo ".PHONY: all $(seq -f 't%g' -s ' ' 1 "$N")"
    echo "all: $(seq -f 't%g' -s ' ' 1 "$N")"
    for ((i = 1; i <= N; i++)); do printf 't%d:\n\t/bin/true\n' "$i"; done
} >"$WORK/wide.mk"
hyperfine -N --warmup 2 --runs "$RUNS" --export-markdown "$WORK/table.md" \
    -n "make -j2" "make -s -j2 -f $WORK/wide.mk" \
    -n "fork+exec" "$WORK/spawn_floor $N fork" \
    -n "clone(VM)+exec" "$WORK/spawn_floor $N vm" \
    -n "+ pidfd" "$WORK/spawn_floor $N vm-pidfd" \
    -n "+ pidfd + 2 pipes (Slipway's)" "$WORK/spawn_floor $N vm-pidfd-pipes" >&2
cat "$WORK/table.md"
