#!/usr/bin/env bash
# Instructions ferry executes per ingested event, counted by callgrind
# (valgrind): deterministic, so it compares builds on a busy machine where
# wall-clock and CPU-time figures drift. POST /v1/batch bodies of 100
# SDK-shaped events (benches/common/sdk_events.py, browser: ~1.1 KB each,
# each with a unique messageId from load_gen), dedup on, no destinations,
# 4 connections. Counts every thread of the server (handlers, log writer,
# dedup writer) from after WARMUP requests to after REQUESTS more; kernel
# work (sockets, writes, fsync) is not counted. Work on a timer (the dedup
# index's once-a-second commit) counts too and runs longer under valgrind:
# compare builds at the same REQUESTS (100 requests: ~40 s per build).
#
#   benches/ingest_instructions.sh                      # this tree's profiling build
#   benches/ingest_instructions.sh /path/a/ferry /path/b/ferry   # several builds, in turn
#   REQUESTS=300 benches/ingest_instructions.sh
#
# Environment: REQUESTS [100], WARMUP [20], PORT [18380]. Needs valgrind
# (callgrind_control included). Time: about a minute per binary.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS="${REQUESTS:-100}"
WARMUP="${WARMUP:-20}"
PORT="${PORT:-18380}"
KEY="wk_load_test"
command -v callgrind_control >/dev/null || { echo "needs valgrind (callgrind)" >&2; exit 1; }

WORK="$(mktemp -d)"
VPID=""
cleanup() {
  if [ -n "$VPID" ]; then kill "$VPID" 2>/dev/null || true; wait "$VPID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

. benches/common/bench_bin.sh
LOAD_BIN="$(bench_bin load_gen)"
BINS=("$@")
if [ "${#BINS[@]}" -eq 0 ]; then
  cargo build --profile profiling --quiet --bin ferry
  BINS=("${CARGO_TARGET_DIR:-target}/profiling/ferry")
fi

python3 - "$WORK" <<'PY'
import json, sys
sys.path.insert(0, "benches/common")
from sdk_events import browser
batch = {"batch": [browser(i) for i in range(100)], "sentAt": "2024-05-01T12:00:00.000Z"}
open(f"{sys.argv[1]}/batch.json", "w").write(json.dumps(batch))
PY

AUTH="Authorization: Basic $(printf '%s:' "$KEY" | base64)"
load() { # requests; fails unless every one was answered 200
  "$LOAD_BIN" -n "$1" -c 4 -H "$AUTH" --url "http://127.0.0.1:$PORT/v1/batch" \
    --body "$WORK/batch.json" >"$WORK/load.out"
  [ "$(grep -E '\[[0-9]{3}\] [0-9]+ responses' "$WORK/load.out" | tr -s ' \t' ' ' | sed 's/^ //')" = "[200] $1 responses" ]
}
for bin in "${BINS[@]}"; do
  rm -rf "$WORK/data" "$WORK"/cg.out*
  cat > "$WORK/ferry.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$WORK/data"
[[sources]]
name = "load"
write_key = "$KEY"
TOML
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
    "$bin" serve --config "$WORK/ferry.toml" >"$WORK/ferry.out" 2>"$WORK/ferry.err" &
  VPID=$!
  for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$PORT/health" && break; sleep 0.1; done
  load "$WARMUP" || { echo "$bin: a warm-up request failed" >&2; exit 1; }
  callgrind_control -z "$VPID" >/dev/null 2>&1
  load "$REQUESTS" || { echo "$bin: a request failed" >&2; exit 1; }
  callgrind_control -d "$VPID" >/dev/null 2>&1
  kill "$VPID"; wait "$VPID" 2>/dev/null || true; VPID=""
  ir="$(awk '/^summary:/ {print $2; exit}' "$WORK/cg.out.1")"
  echo "$bin: $((ir / REQUESTS / 100)) instructions/event ($ir over $REQUESTS requests of 100 events)"
done
echo "settings: REQUESTS=$REQUESTS WARMUP=$WARMUP, /v1/batch x100 browser events, dedup on, 4 connections, callgrind (all threads, user space)"
