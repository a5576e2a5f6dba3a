#!/usr/bin/env bash
# `slipway serve` figures, in one run (see bench/README.md):
#   (a) webhook received → first step started (signed GitHub push, N times, p50/p90)
#   (b) server restart with 10 000 queued requests → /health answers
#   (c) RUNS runs × 10 no-op jobs queued at once → all finished: jobs/s and the server's peak memory, with
#       the server's state in SQLite and in PostgreSQL (a throwaway cluster on loopback: scripts/postgres.sh)
#   (d) the same no-op build through Buildbot (PyPI; master + one worker on loopback, 2 builds at a time):
#       BUILDBOT_BUILDS builds of 10 `true` steps, forced through its REST API → steps/s and peak memory
#
#   bench/server.sh                       # release build in .build-bench, then everything
#   SLIPWAY_BIN=path/to/slipway bench/server.sh
#   HOOKS=20 QUEUED=10000 RUNS=200 bench/server.sh
#
# Results: a markdown summary on stdout and in bench/out/server/summary.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/out}/server
HOOKS=${HOOKS:-30}
QUEUED=${QUEUED:-10000}
RUNS=${RUNS:-200}
BUILDBOT_BUILDS=${BUILDBOT_BUILDS:-20}
mkdir -p "$OUT"
log() { printf '\n== %s\n' "$*" >&2; }

if [[ -z ${SLIPWAY_BIN:-} ]]; then
    log "building slipway (release, scratch path .build-bench)"
    (cd "$ROOT" && swift build -c release --static-swift-stdlib --scratch-path .build-bench --product slipway >&2)
    SLIPWAY_BIN=$ROOT/.build-bench/release/slipway
fi
SW=$SLIPWAY_BIN
WORK=$(mktemp -d "${TMPDIR:-/tmp}/slipway-server-bench.XXXXXX")
SERVER_PID=
cleanup() {
    [[ -n $SERVER_PID ]] && kill -9 "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

start_server() { # data-dir
    rm -f "$1/server.port"
    HOOK_SECRET=bench-secret "$SW" serve --listen 127.0.0.1:0 --data "$1" >"$WORK/serve.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 600); do [[ -s $1/server.port ]] && break; sleep 0.01; done
    PORT=$(cat "$1/server.port")
}
stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

new_repo() { # dir jobs step-command
    mkdir -p "$1"
    git -C "$1" init -q -b main
    {
        echo "name: bench"
        echo "on:"
        echo "  push: {}"
        echo "  manual: {}"
        echo "jobs:"
        for ((i = 1; i <= $2; i++)); do echo "  j$i: { steps: [ { run: '$3' } ] }"; done
    } >"$1/slipway.yml"
    git -C "$1" add -A
    git -C "$1" -c user.name=bench -c user.email=bench@localhost commit -q -m bench
}

# --- (a) webhook → first step -------------------------------------------------------------------
log "(a) webhook received → first step started, $HOOKS signed pushes"
DATA=$WORK/a
new_repo "$WORK/a-repo" 1 "date +%s.%N >> $WORK/a-started"
"$SW" project add hook --repo "$WORK/a-repo" --webhook-secret-from-env HOOK_SECRET --data "$DATA" >/dev/null
TOKEN=$("$SW" token create --role viewer --data "$DATA" 2>/dev/null)
start_server "$DATA"
python3 - "$PORT" "$WORK" "$HOOKS" "$(git -C "$WORK/a-repo" rev-parse HEAD)" "$TOKEN" >"$OUT/a-latency.json" <<'PY'
import hashlib, hmac, json, os, statistics, sys, time, urllib.request
port, work, hooks, commit, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
started_file = os.path.join(work, "a-started")
def request(path, body=None, headers={}):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST" if body else "GET", headers=headers)
    with urllib.request.urlopen(req) as r:
        return r.status, json.loads(r.read() or b"null")
latencies, total = [], []
for i in range(hooks):
    payload = {"ref": "refs/heads/main", "before": "0" * 40, "after": commit, "created": False, "deleted": False,
               "commits": [{"id": commit, "added": [], "modified": ["slipway.yml"], "removed": []}],
               "repository": {"full_name": "bench/hook"}}
    seen = len(open(started_file).read().split()) if os.path.exists(started_file) else 0
    sent = time.time()
    # Deliveries are known by their signed body: each push must differ, as real ones do (timestamps).
    payload["head_commit"] = {"id": commit, "timestamp": f"{sent:.6f}"}
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(b"bench-secret", body, hashlib.sha256).hexdigest()
    status, reply = request("/hooks/github?project=hook", body, {"X-GitHub-Event": "push", "X-GitHub-Delivery": f"bench-{i}-{sent}",
                                                                 "X-Hub-Signature-256": signature, "Content-Type": "application/json"})
    assert status == 202, reply
    while True:
        lines = open(started_file).read().split() if os.path.exists(started_file) else []
        if len(lines) > seen:
            latencies.append((float(lines[seen]) - sent) * 1000)
            break
        time.sleep(0.001)
    # Wait for the request to finish so the next one starts from an idle server.
    while request(f"/api/requests/{reply['request']}", headers={"Authorization": f"Bearer {token}"})[1]["status"] not in ("success", "failure", "error", "skipped"):
        time.sleep(0.005)
    total.append((time.time() - sent) * 1000)
q = statistics.quantiles(latencies, n=10)
print(json.dumps({"hooks": hooks, "p50_ms": statistics.median(latencies), "p90_ms": q[8], "min_ms": min(latencies), "max_ms": max(latencies),
                  "run_total_p50_ms": statistics.median(total)}))
PY
stop_server
cat "$OUT/a-latency.json" >&2

# --- (b) restart with QUEUED queued requests ----------------------------------------------------
log "(b) restart with $QUEUED queued requests → serving"
DATA=$WORK/b
new_repo "$WORK/b-repo" 1 "true"
"$SW" project add queued --repo "$WORK/b-repo" --data "$DATA" >/dev/null
python3 - "$DATA/server.db" "$QUEUED" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
now = time.time()
db.executemany("INSERT INTO run_request (project, event, branch, source, status, created_at) VALUES ('queued', 'manual', 'main', 'bench', 'queued', ?)",
               [(now,)] * int(sys.argv[2]))
db.commit()
PY
python3 - "$SW" "$DATA" "$OUT/b-restart.json" <<'PY'
import json, os, subprocess, sys, time, urllib.request
sw, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
samples = []
for attempt in range(5):
    port_file = os.path.join(data, "server.port")
    if os.path.exists(port_file): os.remove(port_file)
    start = time.time()
    server = subprocess.Popen([sw, "serve", "--listen", "127.0.0.1:0", "--data", data, "--capacity", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            port = int(open(port_file).read())
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    health = json.loads(r.read())
                    break
        except Exception:
            time.sleep(0.002)
    samples.append((time.time() - start) * 1000)
    server.kill()
    server.wait()
print(json.dumps({"queued": health["queued"], "samples_ms": samples, "median_ms": sorted(samples)[2]}), file=open(out, "w"))
PY
cat "$OUT/b-restart.json" >&2

# --- (c) RUNS runs × 10 no-op jobs, on SQLite and on PostgreSQL -----------------------------------
throughput() { # data-dir output.json [database-url]
    local data=$1 output=$2 database=${3:-}
    # One project per run: requests of one project run one at a time, in order.
    for ((i = 1; i <= RUNS; i++)); do
        "$SW" project add "p$i" --repo "$WORK/c-repo" --data "$data" ${database:+--database "$database"} >/dev/null
    done
    TOKEN=$("$SW" token create --role developer --data "$data" 2>/dev/null)
    start_server "$data"
    python3 - "$PORT" "$RUNS" "$TOKEN" "$SERVER_PID" "${database:+postgres}" >"$output" <<'PY'
import json, sys, time, urllib.request
port, runs, token, pid, database = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] or "sqlite"
auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
def call(path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST" if body else "GET", headers=auth)
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())
def round():
    start = time.time()
    ids = [call(f"/api/projects/p{i}/requests", b'{"branch": "main"}')["id"] for i in range(1, runs + 1)]
    peak = 0
    while True:
        statuses = [call(f"/api/requests/{i}")["status"] for i in ids]
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"): peak = int(line.split()[1])
        if all(s in ("success", "failure", "error", "skipped", "cancelled") for s in statuses): break
        time.sleep(0.5)
    elapsed = time.time() - start
    for i in ids:
        request = call(f"/api/requests/{i}")
        if request["status"] != "success":
            print(f"request {i} ({request['project']}): {request['status']}: {request.get('reason')}", file=sys.stderr)
    return elapsed, statuses.count("success"), peak
# The first round also creates every project's run store (a SQLite file, or a PostgreSQL schema and its
# tables); the second is the steady state.
first, first_ok, _ = round()
elapsed, succeeded, peak = round()
print(json.dumps({"database": database, "runs": runs, "jobs": runs * 10, "seconds": elapsed, "jobs_per_second": runs * 10 / elapsed,
                  "succeeded": succeeded, "peak_rss_mib": peak / 1024,
                  "first_round_seconds": first, "first_round_jobs_per_second": runs * 10 / first, "first_round_succeeded": first_ok}))
PY
    stop_server
    cat "$output" >&2
}
new_repo "$WORK/c-repo" 10 "true"
log "(c) $RUNS runs × 10 no-op jobs, queued at once, SQLite"
throughput "$WORK/c" "$OUT/c-throughput.json"
log "(c) $RUNS runs × 10 no-op jobs, queued at once, PostgreSQL (scripts/postgres.sh: loopback, fsync on)"
# Outside $WORK: PostgreSQL runs as its own user, which cannot enter mktemp's private directory.
PG_DIR=${TMPDIR:-/tmp}/slipway-bench-postgres-$$
PG_URL=$(bash "$ROOT/scripts/postgres.sh" start "$PG_DIR" 55433)
throughput "$WORK/c-pg" "$OUT/c-throughput-postgres.json" "$PG_URL?schema=bench$$"
bash "$ROOT/scripts/postgres.sh" stop "$PG_DIR"
rm -rf "$PG_DIR"

# --- (d) Buildbot ------------------------------------------------------------------------------
log "(d) Buildbot: $BUILDBOT_BUILDS builds × 10 no-op steps, one worker, 2 builds at a time"
if ! command -v buildbot >/dev/null || ! command -v buildbot-worker >/dev/null || ! python3 -c 'import buildbot_www' 2>/dev/null; then
    python3 -m pip install -q buildbot buildbot-www buildbot-worker >&2
fi
BB=$WORK/buildbot
mkdir -p "$BB"
PB_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
WWW_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
buildbot create-master -q "$BB/master"
cat >"$BB/master/master.cfg" <<CFG
from buildbot.plugins import *
c = BuildmasterConfig = {}
c['workers'] = [worker.Worker("w1", "pass", max_builds=2)]
c['protocols'] = {'pb': {'port': "tcp:$PB_PORT:interface=127.0.0.1"}}
c['schedulers'] = [schedulers.ForceScheduler(name="force", builderNames=["noop"])]
f = util.BuildFactory()
for i in range(10):
    f.addStep(steps.ShellCommand(command=["true"], name="s%d" % i))
c['builders'] = [util.BuilderConfig(name="noop", workernames=["w1"], factory=f)]
c['www'] = dict(port="tcp:$WWW_PORT:interface=127.0.0.1", plugins={})
c['db'] = {'db_url': "sqlite:///state.sqlite"}
c['buildbotURL'] = "http://127.0.0.1:$WWW_PORT/"
c['collapseRequests'] = False
c['buildbotNetUsageData'] = None
CFG
buildbot upgrade-master "$BB/master" >/dev/null 2>&1
buildbot start "$BB/master" >/dev/null
buildbot-worker create-worker -q "$BB/worker" "127.0.0.1:$PB_PORT" w1 pass
buildbot-worker start "$BB/worker" >/dev/null
python3 - "$WWW_PORT" "$BUILDBOT_BUILDS" "$BB" >"$OUT/d-buildbot.json" <<'PY'
import json, os, sys, time, urllib.request
port, builds, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def call(path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"}, method="POST" if body else "GET")
    return json.loads(urllib.request.urlopen(req).read())
# Wait for the worker to connect.
for _ in range(600):
    if call("/api/v2/workers")["workers"] and call("/api/v2/workers")["workers"][0]["connected_to"]: break
    time.sleep(0.1)
pids = [int(open(os.path.join(root, d, "twistd.pid")).read()) for d in ("master", "worker")]
start = time.time()
for i in range(builds):
    call("/api/v2/forceschedulers/force", {"id": i, "jsonrpc": "2.0", "method": "force", "params": {"builderid": 1}})
peak = 0
while True:
    done = [b for b in call("/api/v2/builds")["builds"] if b["complete"]]
    rss = 0
    for pid in pids:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"): rss += int(line.split()[1])
    peak = max(peak, rss)
    if len(done) >= builds: break
    time.sleep(0.2)
elapsed = time.time() - start
print(json.dumps({"builds": builds, "steps": builds * 10, "seconds": elapsed, "steps_per_second": builds * 10 / elapsed,
                  "succeeded": sum(1 for b in done if b["results"] == 0), "peak_rss_mib": peak / 1024}))
PY
buildbot-worker stop "$BB/worker" >/dev/null 2>&1 || true
buildbot stop "$BB/master" >/dev/null 2>&1 || true
cat "$OUT/d-buildbot.json" >&2

python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, os, sys
out = sys.argv[1]
a = json.load(open(os.path.join(out, "a-latency.json")))
b = json.load(open(os.path.join(out, "b-restart.json")))
c = json.load(open(os.path.join(out, "c-throughput.json")))
cp = json.load(open(os.path.join(out, "c-throughput-postgres.json")))
d = json.load(open(os.path.join(out, "d-buildbot.json")))
def verdict(ok): return "**PASS**" if ok else "**MISS**"
print("| figure | measured | target | result |")
print("|---|---|---|---|")
print(f"| webhook received → first step started, p50 ({a['hooks']} pushes, SQLite) | {a['p50_ms']:.1f} ms (p90 {a['p90_ms']:.1f}, min {a['min_ms']:.1f}) | ≤ 20 ms | {verdict(a['p50_ms'] <= 20)} |")
print(f"| (info) webhook → run finished, p50 (1 job) | {a['run_total_p50_ms']:.1f} ms | — | — |")
print(f"| restart with {b['queued']} queued requests → /health answers (median of 5) | {b['median_ms']:.0f} ms ({', '.join(f'{x:.0f}' for x in b['samples_ms'])}) | ≤ 1 s | {verdict(b['median_ms'] <= 1000)} |")
print(f"| {c['runs']} runs × 10 no-op jobs queued at once (SQLite), second round | {c['jobs_per_second']:.1f} jobs/s ({c['seconds']:.1f} s, {c['succeeded']}/{c['runs']} succeeded), peak RSS {c['peak_rss_mib']:.0f} MiB; first round (creates the run stores) {c['first_round_jobs_per_second']:.1f} jobs/s | — | — |")
print(f"| {cp['runs']} runs × 10 no-op jobs queued at once (PostgreSQL), second round | {cp['jobs_per_second']:.1f} jobs/s ({cp['seconds']:.1f} s, {cp['succeeded']}/{cp['runs']} succeeded), peak RSS {cp['peak_rss_mib']:.0f} MiB; first round (creates the schemas) {cp['first_round_jobs_per_second']:.1f} jobs/s | — | — |")
print(f"| (peer) Buildbot: {d['builds']} builds × 10 no-op steps, 2 at a time | {d['steps_per_second']:.1f} steps/s ({d['seconds']:.1f} s, {d['succeeded']}/{d['builds']} succeeded), peak RSS master+worker {d['peak_rss_mib']:.0f} MiB | — | Slipway {c['jobs_per_second'] / d['steps_per_second']:.0f}× the throughput |")
PY
