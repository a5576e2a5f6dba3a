#!/usr/bin/env bash
# Remote runner figures, in one run (see bench/README.md):
#   (e) dispatch to an idle remote runner: job queued for a runner → its first step running there,
#       from the server's attempt row and the step row the runner reported (same clock: loopback);
#       beside it the same job run by the server's own executor
#   (f) dead-runner detection: `kill -9` of a runner mid-job → the server records it lost and queues
#       the job again (default --runner-timeout 5s)
#
#   bench/runners.sh                      # release build in .build-bench, then everything
#   SLIPWAY_BIN=path/to/slipway RUNS=50 KILLS=5 bench/runners.sh
#
# Results: a markdown summary on stdout and in bench/out/runners/summary.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/out}/runners
RUNS=${RUNS:-30}
KILLS=${KILLS:-3}
TIMEOUT=${RUNNER_TIMEOUT:-5s}
mkdir -p "$OUT"
log() { printf '\n== %s\n' "$*" >&2; }

if [[ -z ${SLIPWAY_BIN:-} ]]; then
    log "building slipway (release, scratch path .build-bench)"
    (cd "$ROOT" && swift build -c release --static-swift-stdlib --scratch-path .build-bench --product slipway >&2)
    SLIPWAY_BIN=$ROOT/.build-bench/release/slipway
fi
SW=$SLIPWAY_BIN
WORK=$(mktemp -d "${TMPDIR:-/tmp}/slipway-runner-bench.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    pkill -9 -f "sleep 3600.4242" 2>/dev/null || true
    [[ -n ${KEEP:-} ]] || rm -rf "$WORK"
}
trap cleanup EXIT

DATA=$WORK/data
REPO=$WORK/repo
mkdir -p "$REPO"
git -C "$REPO" init -q -b main
cat >"$REPO/slipway.yml" <<'YML'
name: runners
on:
  manual:
    inputs: { mode: { default: remote } }
jobs:
  remote:
    if: ${{ inputs.mode == 'remote' }}
    runs-on: [bench]
    steps: [ { run: 'true' } ]
  local:
    if: ${{ inputs.mode == 'local' }}
    steps: [ { run: 'true' } ]
  doomed:
    if: ${{ inputs.mode == 'doomed' }}
    runs-on: [bench]
    steps: [ { run: 'sleep 3600.4242' } ]
YML
git -C "$REPO" add -A
git -C "$REPO" -c user.name=bench -c user.email=bench@localhost commit -q -m bench
"$SW" project add bench --repo "$REPO" --data "$DATA" >/dev/null
ADMIN=$("$SW" token create --role admin --name bench --data "$DATA" 2>/dev/null)
RUNNER=$("$SW" token create --role runner --name runners --data "$DATA" 2>/dev/null)
"$SW" serve --listen 127.0.0.1:0 --data "$DATA" --runner-timeout "$TIMEOUT" >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 600); do [[ -s $DATA/server.port ]] && break; sleep 0.01; done
PORT=$(cat "$DATA/server.port")
start_runner() { # name
    "$SW" runner --server "http://127.0.0.1:$PORT" --token "$RUNNER" --labels bench,linux --name "$1" --work "$WORK/$1" >"$WORK/$1.log" 2>&1 &
    RUNNER_PID=$!
    PIDS+=("$RUNNER_PID")
}
start_runner r1

log "(e) dispatch to an idle runner, $RUNS runs each remote and local"
python3 - "$PORT" "$ADMIN" "$RUNS" "$DATA/projects/bench/state/state.db" "$OUT/e-dispatch.json" <<'PY'
import json, sqlite3, statistics, sys, time, urllib.request
port, token, runs, db_path, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
def call(path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode() if body is not None else None,
                                 method="POST" if body is not None else "GET", headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r: return json.loads(r.read() or b"null")
while not any(r["online"] for r in call("/api/runners")["runners"]): time.sleep(0.05)
time.sleep(0.5)
for mode in ["remote", "local"] * runs:
    request = call("/api/projects/bench/requests", {"branch": "main", "inputs": {"mode": mode}})
    while call(f"/api/requests/{request['id']}")["status"] not in ("success", "failure", "error", "skipped", "cancelled"): time.sleep(0.01)
    final = call(f"/api/requests/{request['id']}"); assert final["status"] == "success", final
    time.sleep(0.2)  # the runner is back in its long poll: idle
db = sqlite3.connect(db_path)
result = {}
for key in ("remote", "local"):
    rows = db.execute("""SELECT (MIN(s.started_at) - a.started_at) * 1000 FROM attempt a JOIN job j ON j.id = a.job_row_id
                         JOIN step s ON s.attempt_id = a.id WHERE j.key = ? AND j.status = 'success' GROUP BY a.id""", (key,)).fetchall()
    values = sorted(r[0] for r in rows)
    q = statistics.quantiles(values, n=10)
    result[key] = {"n": len(values), "p50_ms": statistics.median(values), "p90_ms": q[8], "min_ms": values[0], "max_ms": values[-1]}
leased = [r[0] for r in db.execute("""SELECT (e.at - a.started_at) * 1000 FROM event e JOIN job j ON j.run_id = e.run_id AND j.key = e.job_key
                                      JOIN attempt a ON a.job_row_id = j.id WHERE e.kind = 'leased' AND j.key = 'remote'""")]
result["queued_to_leased_p50_ms"] = statistics.median(leased)
json.dump(result, open(out, "w"))
print(json.dumps(result))
PY

log "(f) dead-runner detection, $KILLS kills (runner timeout $TIMEOUT)"
# r1 goes first, so each doomed job can only go to that round's victim.
kill -9 "$RUNNER_PID"
python3 - "$PORT" "$ADMIN" <<'PY'
import json, sys, time, urllib.request
port, token = sys.argv[1], sys.argv[2]
def runners():
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/runners", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as r: return json.loads(r.read())["runners"]
while any(r["name"] == "r1" and r["online"] for r in runners()): time.sleep(0.1)
PY
python3 - "$PORT" "$ADMIN" "$KILLS" "$DATA/projects/bench/state/state.db" "$OUT/f-dead.json" "$SW" "$RUNNER" "$WORK" <<'PY'
import json, os, signal, sqlite3, statistics, subprocess, sys, time, urllib.request
port, token, kills, db_path, out, sw, runner_token, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8]
def call(path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode() if body is not None else None,
                                 method="POST" if body is not None else "GET", headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r: return json.loads(r.read() or b"null")
db = sqlite3.connect(db_path)
samples = []
for i in range(kills):
    name = f"victim{i}"
    runner = subprocess.Popen([sw, "runner", "--server", f"http://127.0.0.1:{port}", "--token", runner_token, "--labels", "bench",
                               "--name", name, "--work", os.path.join(work, name)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not any(r["name"] == name and r["online"] for r in call("/api/runners")["runners"]): time.sleep(0.05)
    request = call("/api/projects/bench/requests", {"branch": "main", "inputs": {"mode": "doomed"}})
    while not any(r["name"] == name and r["leases"] for r in call("/api/runners")["runners"]): time.sleep(0.01)
    time.sleep(0.5)
    before = db.execute("SELECT COUNT(*) FROM event WHERE kind = 'runner-lost'").fetchone()[0]
    killed = time.time()
    runner.kill()
    runner.wait()
    while db.execute("SELECT COUNT(*) FROM event WHERE kind = 'runner-lost'").fetchone()[0] == before: time.sleep(0.01)
    lost_at = db.execute("SELECT MAX(at) FROM event WHERE kind = 'runner-lost'").fetchone()[0]
    samples.append(lost_at - killed)
    call(f"/api/requests/{request['id']}/cancel", {})
    while call(f"/api/requests/{request['id']}")["status"] not in ("success", "failure", "error", "skipped", "cancelled"): time.sleep(0.05)
    subprocess.run(["pkill", "-9", "-f", "sleep 3600.4242"])
result = {"kills": len(samples), "detect_s": samples, "p50_s": statistics.median(samples), "max_s": max(samples)}
json.dump(result, open(out, "w"))
print(json.dumps(result))
PY

python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, os, platform, sys
out = sys.argv[1]
e = json.load(open(os.path.join(out, "e-dispatch.json")))
f = json.load(open(os.path.join(out, "f-dead.json")))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"### Remote runners ({os.cpu_count()} cores, {cpu})\n")
print("| figure | target | result |")
print("|---|---|---|")
print(f"| job queued for a runner → its first step running on an idle runner (p50 / p90, n={e['remote']['n']}) | ≤ 50 ms | {e['remote']['p50_ms']:.1f} / {e['remote']['p90_ms']:.1f} ms |")
print(f"| same job on the server's own executor (p50 / p90) | — | {e['local']['p50_ms']:.1f} / {e['local']['p90_ms']:.1f} ms |")
print(f"| job queued → lease handed to the waiting runner (p50) | — | {e['queued_to_leased_p50_ms']:.2f} ms |")
print(f"| `kill -9` of a runner mid-job → lost and queued again (p50 / max, n={f['kills']}) | ≤ 10 s | {f['p50_s']:.2f} / {f['max_s']:.2f} s |")
PY
