#!/usr/bin/env bash
# Slipway benchmarks, side by side with bash, make and ninja. See bench/README.md.
#
#   bench/run.sh                       # build release slipway into .build-bench, run everything
#   SLIPWAY_BIN=/path/to/slipway bench/run.sh
#   RUNS=3 bench/run.sh                # fewer runs per command (default per scenario below)
#
# Results: hyperfine JSON in bench/out/{a-steps,b-wide,c-output,d-cached}.json,
# a markdown summary on stdout and in bench/out/summary.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/out}
RUNS_A=${RUNS_A:-${RUNS:-10}}
RUNS_B=${RUNS_B:-${RUNS:-5}}
RUNS_C=${RUNS_C:-${RUNS:-5}}
RUNS_D=${RUNS_D:-${RUNS:-10}}
WARMUP=${WARMUP:-1}
# Sizes: change only for a quick smoke test; the targets are defined for these values.
STEPS=${STEPS:-500}
WIDE=${WIDE:-1000}
CACHED_JOBS=${CACHED_JOBS:-20}
OUTPUT_BYTES=${OUTPUT_BYTES:-100000000}
OUTPUT_CMD="yes 0123456789012345678901234567890123456789012345678 | head -c $OUTPUT_BYTES"

log() { printf '\n== %s\n' "$*" >&2; }
# Steps of run 1 that succeeded, from the state database.
succeeded_steps() {
    python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from step where status = ?", ("success",)).fetchone()[0])' "$1/.slipway/state.db"
}

# --- peers --------------------------------------------------------------------------------------
need_packages=()
command -v hyperfine >/dev/null || need_packages+=(hyperfine)
command -v ninja >/dev/null || need_packages+=(ninja-build)
command -v make >/dev/null || need_packages+=(make)
command -v git >/dev/null || need_packages+=(git)
command -v cc >/dev/null || need_packages+=(gcc)
[[ -e /usr/include/sqlite3.h ]] || need_packages+=(libsqlite3-dev)
if ((${#need_packages[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing ${need_packages[*]}"
        apt-get install -y "${need_packages[@]}" >/dev/null 2>&1 ||
            { apt-get update >/dev/null && apt-get install -y "${need_packages[@]}" >/dev/null; }
    else
        echo "missing: ${need_packages[*]} (install them, or run as root with apt-get)" >&2
        exit 2
    fi
fi

# --- slipway ------------------------------------------------------------------------------------
if [[ -z ${SLIPWAY_BIN:-} ]]; then
    log "building slipway (release, scratch path .build-bench)"
    (cd "$ROOT" && swift build -c release --static-swift-stdlib --scratch-path .build-bench >&2)
    SLIPWAY_BIN="$(cd "$ROOT" && swift build -c release --static-swift-stdlib --scratch-path .build-bench --show-bin-path)/slipway"
fi
SLIPWAY_BIN=$(realpath "$SLIPWAY_BIN")
[[ -x $SLIPWAY_BIN ]] || { echo "no slipway binary at $SLIPWAY_BIN" >&2; exit 2; }
SW=$(printf '%q' "$SLIPWAY_BIN")

mkdir -p "$OUT"
rm -f "$OUT"/{a-steps,b-wide,b-interleaved,c-output,d-cached}.json
printf '{"steps": %d, "wide": %d, "cached_jobs": %d, "output_bytes": %d}\n' \
    "$STEPS" "$WIDE" "$CACHED_JOBS" "$OUTPUT_BYTES" >"$OUT/params.json"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/slipway-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# A fresh git repository holding only slipway.yml (written by the caller) plus optional files.
new_repo() {
    local dir=$WORK/$1/repo
    mkdir -p "$dir" "$WORK/$1/peers"
    git -C "$dir" init -q -b main
    echo "$dir"
}
commit_repo() {
    git -C "$1" add -A
    git -C "$1" -c user.name=bench -c user.email=bench@localhost -c commit.gpgsign=false commit -q -m bench
}

HF=(hyperfine --style basic --warmup "$WARMUP")

# --- (a) 500 no-op steps in a chain --------------------------------------------------------------
log "(a) per-step overhead: $STEPS steps of /bin/true"
repo=$(new_repo a); peers=$WORK/a/peers
{
    echo "name: bench-steps"
    echo "jobs:"
    echo "  chain:"
    echo "    steps:"
    for ((i = 1; i <= STEPS; i++)); do echo "      - run: /bin/true"; done
} >"$repo/slipway.yml"
commit_repo "$repo"
{
    echo "#!/bin/bash"
    for ((i = 1; i <= STEPS; i++)); do echo "/bin/true"; done
} >"$peers/chain.sh"
# What slipway spawns per step, without slipway: one bash -c per command.
cat >"$peers/bash-c-loop.sh" <<EOF
#!/bin/bash
for ((i = 0; i < $STEPS; i++)); do bash --noprofile --norc -e -o pipefail -c /bin/true; done
EOF
{
    echo ".PHONY: all $(seq -f 't%g' -s ' ' 1 $STEPS)"
    echo "all: t$STEPS"
    echo "t1:"
    printf '\t/bin/true\n'
    for ((i = 2; i <= STEPS; i++)); do
        echo "t$i: t$((i - 1))"
        printf '\t/bin/true\n'
    done
} >"$peers/chain.mk"
(cd "$repo" && "${HF[@]}" --runs "$RUNS_A" --prepare 'rm -rf .slipway' \
    --export-json "$OUT/a-steps.json" \
    -n slipway "$SW run --plain --jobs 1" \
    -n bash-script "bash $peers/chain.sh" \
    -n bash-c-loop "bash $peers/bash-c-loop.sh" \
    -n make "make -s -f $peers/chain.mk" >&2)
# hyperfine runs --prepare before every command, so check the result on one more (untimed) run.
(cd "$repo" && rm -rf .slipway && "$SLIPWAY_BIN" run --plain --jobs 1 >/dev/null)
# Silent steps write no log file, so count the steps the state database recorded as successful.
steps_done=$(succeeded_steps "$repo")
[[ $steps_done == "$STEPS" ]] || { echo "(a) expected $STEPS successful steps, found $steps_done" >&2; exit 1; }

# --- (b) 1000-job wide DAG -----------------------------------------------------------------------
log "(b) wide DAG: $WIDE independent no-op jobs, 2 at a time"
repo=$(new_repo b); peers=$WORK/b/peers
{
    echo "name: bench-wide"
    echo "jobs:"
    for ((i = 1; i <= WIDE; i++)); do echo "  j$i: { steps: [ { run: /bin/true } ] }"; done
} >"$repo/slipway.yml"
commit_repo "$repo"
{
    echo ".PHONY: all $(seq -f 't%g' -s ' ' 1 $WIDE)"
    echo "all: $(seq -f 't%g' -s ' ' 1 $WIDE)"
    for ((i = 1; i <= WIDE; i++)); do
        echo "t$i:"
        printf '\t/bin/true\n'
    done
} >"$peers/wide.mk"
# The same, keeping what Slipway keeps at the least: each job's output in a log file of its own.
{
    echo ".PHONY: all $(seq -f 't%g' -s ' ' 1 $WIDE)"
    echo "all: $(seq -f 't%g' -s ' ' 1 $WIDE)"
    for ((i = 1; i <= WIDE; i++)); do
        echo "t$i:"
        printf '	/bin/true >%s/logs/t%d.log 2>&1\n' "$peers" "$i"
    done
} >"$peers/wide-logged.mk"
{
    echo "rule noop"
    echo "  command = /bin/true"
    # Outputs are never created, so every edge runs on every invocation.
    for ((i = 1; i <= WIDE; i++)); do echo "build t$i: noop"; done
    echo "build all: phony $(seq -f 't%g' -s ' ' 1 $WIDE)"
    echo "default all"
} >"$peers/build.ninja"
# The durable floor (bench/floor.c): the least any engine keeping issue 2's rules can do per job, in C.
floor=()
if cc -O2 -o "$peers/floor" "$ROOT/bench/floor.c" -lsqlite3 2>/dev/null; then
    floor=(-n floor-journal "$peers/floor $peers/floor.db $peers/logs $WIDE 2 journal"
           -n floor-tables "$peers/floor $peers/floor.db $peers/logs $WIDE 2 tables")
else
    echo "(b) bench/floor.c not built (needs cc and libsqlite3-dev): no floor peers" >&2
fi
(cd "$repo" && "${HF[@]}" --runs "$RUNS_B" --prepare "rm -rf .slipway $peers/logs $peers/floor.db* && mkdir $peers/logs" \
    --export-json "$OUT/b-wide.json" \
    -n slipway "$SW run --plain --jobs 2" \
    -n make "make -s -j2 -f $peers/wide.mk" \
    -n make-logged "make -s -j2 -f $peers/wide-logged.mk" \
    -n ninja "ninja -j2 -C $peers" "${floor[@]}" >&2)
(cd "$repo" && rm -rf .slipway && "$SLIPWAY_BIN" run --plain --jobs 2 >/dev/null)
jobs_done=$(succeeded_steps "$repo")
[[ $jobs_done == "$WIDE" ]] || { echo "(b) expected $WIDE successful steps, found $jobs_done" >&2; exit 1; }
# hyperfine runs all of one command, then all of the next: the machine's drift between them moves the ratio by
# several per cent. The same ratio with slipway and make interleaved round by round cancels it out.
log "(b) wide DAG again, slipway and make interleaved: ${ROUNDS_B_INTERLEAVED:-15} rounds"
python3 "$ROOT/bench/wide_ab.py" --rounds "${ROUNDS_B_INTERLEAVED:-15}" --jobs "$WIDE" --json "$OUT/b-interleaved.json" "$SLIPWAY_BIN" >&2

# --- (c) 100 MB of output from one step ----------------------------------------------------------
log "(c) output capture: $OUTPUT_BYTES bytes from one step"
repo=$(new_repo c); peers=$WORK/c/peers
# `yes` dies of SIGPIPE when head exits; steps run with pipefail, so the step turns it off.
cat >"$repo/slipway.yml" <<EOF
name: bench-output
jobs:
  big:
    steps:
      - run: |
          set +o pipefail
          $OUTPUT_CMD
EOF
commit_repo "$repo"
printf '#!/bin/bash\nset -e +o pipefail\n%s > /dev/null\n' "$OUTPUT_CMD" >"$peers/direct.sh"
(cd "$repo" && "${HF[@]}" --runs "$RUNS_C" --prepare 'rm -rf .slipway' \
    --export-json "$OUT/c-output.json" \
    -n slipway "$SW run --plain > /dev/null" \
    -n bash-devnull "bash $peers/direct.sh" >&2)
(cd "$repo" && rm -rf .slipway && "$SLIPWAY_BIN" run --plain >/dev/null)
captured=$(find "$repo/.slipway/runs/1/logs" -name '*.log' -exec cat {} + | cut -d' ' -f3- | wc -c)
[[ $captured == "$OUTPUT_BYTES" ]] || { echo "(c) expected $OUTPUT_BYTES bytes in the log, found $captured" >&2; exit 1; }

# --- (d) cached re-run of a 20-job pipeline ------------------------------------------------------
log "(d) cached re-run: $CACHED_JOBS jobs in a chain, all hitting the cache"
repo=$(new_repo d)
mkdir -p "$repo/src"
for ((i = 1; i <= 50; i++)); do echo "source file $i" >"$repo/src/f$i.txt"; done
{
    echo "name: bench-cached"
    echo "jobs:"
    for ((i = 1; i <= CACHED_JOBS; i++)); do
        echo "  j$i:"
        ((i > 1)) && echo "    needs: [j$((i - 1))]"
        echo "    cache: { inputs: [\"src/**\"] }"
        echo "    steps:"
        echo "      - run: /bin/true"
    done
} >"$repo/slipway.yml"
commit_repo "$repo"
(cd "$repo" && "$SLIPWAY_BIN" run --plain >/dev/null) # fills the cache
(cd "$repo" && "${HF[@]}" --runs "$RUNS_D" \
    --export-json "$OUT/d-cached.json" \
    -n slipway-cached "$SW run --plain" \
    -n slipway-no-cache "$SW run --plain --no-cache" \
    -n slipway-validate "$SW validate" >&2)
hits=$(cd "$repo" && "$SLIPWAY_BIN" run --plain | grep -c '↺' || true)
[[ $hits == "$CACHED_JOBS" ]] || { echo "(d) expected $CACHED_JOBS cache hits, saw $hits" >&2; exit 1; }

# --- summary -------------------------------------------------------------------------------------
python3 "$ROOT/bench/summarize.py" "$OUT" | tee "$OUT/summary.md"
