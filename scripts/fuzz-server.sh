#!/usr/bin/env bash
# Fuzzes the server's HTTP surface with schemathesis against its own /openapi.json (every check), on a
# throw-away data directory with one project and an admin token. What it found is kept as regression
# cases in Tests/SlipwayServerTests/ServerRoutesTests.swift (fuzzFindingsStayFixed).
#
#   scripts/fuzz-server.sh                    # debug build of slipway, 200 examples per operation
#   SLIPWAY_BIN=path EXAMPLES=1000 scripts/fuzz-server.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EXAMPLES=${EXAMPLES:-200}
command -v schemathesis >/dev/null || python3 -m pip install -q schemathesis
if [[ -z ${SLIPWAY_BIN:-} ]]; then
    (cd "$ROOT" && swift build --product slipway >&2)
    SLIPWAY_BIN=$ROOT/.build/debug/slipway
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/slipway-fuzz.XXXXXX")
PID=
trap '[[ -n $PID ]] && kill $PID 2>/dev/null; rm -rf "$WORK"' EXIT
git -C "$WORK" init -q -b main repo
printf 'name: fuzz\non:\n  manual: {}\n  push: {}\njobs:\n  a:\n    steps:\n      - run: "true"\n' >"$WORK/repo/slipway.yml"
git -C "$WORK/repo" add -A
git -C "$WORK/repo" -c user.name=fuzz -c user.email=fuzz@localhost commit -q -m fuzz
"$SLIPWAY_BIN" project add demo --repo "$WORK/repo" --webhook-secret-from-env HOOK --data "$WORK/data" >/dev/null
TOKEN=$("$SLIPWAY_BIN" token create --role admin --data "$WORK/data" 2>/dev/null)
HOOK=fuzz-secret "$SLIPWAY_BIN" serve --listen 127.0.0.1:0 --data "$WORK/data" >"$WORK/serve.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do [[ -s $WORK/data/server.port ]] && break; sleep 0.05; done
PORT=$(cat "$WORK/data/server.port")
schemathesis run "http://127.0.0.1:$PORT/openapi.json" -H "Authorization: Bearer $TOKEN" \
    --checks all --max-examples "$EXAMPLES" --workers 1
# The server must have survived all of it.
kill -0 $PID
