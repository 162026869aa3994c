#!/usr/bin/env bash
# Forwarding edge → upstream ferry: how fast an edge ferry drains a stored
# backlog into a second ferry through a `type = "segment"` destination, and
# the bytes on the wire per event with gzip against plain JSON.
#
#   benches/forward.sh                        # 300,000 events, gzip then plain
#   EVENTS=100000 benches/forward.sh          # a shorter run
#   PASSES=gzip benches/forward.sh            # only the gzip pass
#   DEST_OPTS='concurrency = 8' benches/forward.sh
#
# Release build; everything on 127.0.0.1 and this machine's cores (the
# upstream ferry, the edge ferry and, while filling, the load generator
# share them). Steps:
#  1. fill: an edge ferry without destinations takes EVENTS events (requests
#     of 100 SDK-shaped "Product Viewed" events, ~1.1 KB each, USERS users, sent
#     closed loop by benches/load_gen.rs over 32 connections), then stops;
#  2. for each pass of PASSES: a fresh upstream ferry (empty data directory,
#     dedup on: it stores every event once and fsyncs as ferry does), and
#     the edge restarted on its stored backlog with one destination
#     `type = "segment"`, `url` = the upstream, `start = "earliest"`, the
#     segment defaults (batch_size 500, batch_max_bytes 480 KiB, concurrency
#     4) and `gzip = true` or `false`. Timed from the edge's first /metrics
#     answer until ferry_delivery_delivered_total reaches EVENTS; the upstream's
#     ferry_ingest_events_total must then be EVENTS too.
# It reports per pass: events/s, bytes per event on the wire
# (ferry_delivery_sent_bytes_total / EVENTS) and as JSON before compression
# (ferry_delivery_sent_json_bytes_total / EVENTS; the same bodies, so both
# figures of the gzip pass come from one run), requests, and the CPU seconds
# of each ferry. Time: the fill plus two drains, under a minute for 300,000
# events here. Disk: about EVENTS × 2.6 KB (both logs).
#
# Environment (defaults in brackets):
#   EVENTS     events to forward, rounded up to whole requests of 100 [300000]
#   USERS      distinct userIds [1000]
#   PASSES     of "gzip plain" [gzip plain]
#   DEST_OPTS  extra TOML lines for the segment destination []
#   EDGE_PORT, UP_PORT   ports on 127.0.0.1 [18280, 18281]
#   DATA_ROOT  where the temporary directory goes [$TMPDIR or /tmp]
#   KEEP       1: keep the temporary directory [0]
set -euo pipefail
cd "$(dirname "$0")/.."
export FERRY_BENCH_COMMON="$PWD/benches/common"  # sdk_events.py, ferry_bench.py: what the load scripts share

EVENTS="${EVENTS:-300000}"
USERS="${USERS:-1000}"
PASSES="${PASSES:-gzip plain}"
DEST_OPTS="${DEST_OPTS:-}"
EDGE_PORT="${EDGE_PORT:-18280}"
UP_PORT="${UP_PORT:-18281}"
DATA_ROOT="${DATA_ROOT:-${TMPDIR:-/tmp}}"
export FERRY_LOG="${FERRY_LOG:-warn}"
EDGE_KEY="wk_forward_edge"
UP_KEY="wk_forward_central"
ADMIN="forward-bench-admin-token"

die() { echo "forward: $*" >&2; exit 1; }
for v in EVENTS USERS EDGE_PORT UP_PORT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || die "$v must be a positive whole number"
done
for p in $PASSES; do
  case "$p" in gzip | plain) ;; *) die "PASSES holds '$p': use gzip and/or plain" ;; esac
done
REQUESTS=$(((EVENTS + 99) / 100))
EVENTS=$((REQUESTS * 100))

mkdir -p "$DATA_ROOT"
WORK="$(mktemp -d "$DATA_ROOT/ferry-forward.XXXXXX")"
PIDS=""
cleanup() {
  for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
  for pid in $PIDS; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "forward: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

avail="$(df -B1 --output=avail "$WORK" | tail -n 1 | tr -d ' ')"
[ "$avail" -gt $((EVENTS * 2600 + 200000000)) ] || die "not enough free disk in $WORK"

echo "forward: building (release)" >&2
. benches/common/bench_bin.sh
LOAD_BIN="$(bench_bin load_gen)"
[ -x "$LOAD_BIN" ] || die "could not build the load_gen bench"
cargo build --release --quiet --bin ferry
cp "${CARGO_TARGET_DIR:-target}/release/ferry" "$WORK/ferry"

cat >"$WORK/fwd.py" <<'PY'
import json, math, os, re, sys, time, urllib.request

sys.path.insert(0, os.environ["FERRY_BENCH_COMMON"])
from ferry_bench import cpu_ticks, metric, scrape, write_bodies  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def bodies(work, users):
    print(",".join(write_bodies(work, users)))


def cpu(pid):
    return cpu_ticks(pid) / HZ

def wait_up(port):
    for _ in range(600):
        try:
            return scrape(port)
        except OSError:
            time.sleep(0.05)
    sys.exit(f"forward: nothing answers on port {port}")


def drain(edge_port, up_port, edge_pid, up_pid, events, dest, label):
    events = int(events)
    wait_up(edge_port)
    t0, e0, u0 = time.time(), cpu(edge_pid), cpu(up_pid)
    while True:
        m = scrape(edge_port)
        done = metric(m, "ferry_delivery_delivered_total", destination=dest)
        dead = metric(m, "ferry_delivery_dead_lettered_total", destination=dest)
        if done + dead >= events:
            break
        if time.time() - t0 > 600:
            sys.exit(f"forward: {label}: {done:.0f} of {events} delivered after 10 minutes")
        time.sleep(0.05)
    secs = time.time() - t0
    ecpu, ucpu = cpu(edge_pid) - e0, cpu(up_pid) - u0
    wire = metric(m, "ferry_delivery_sent_bytes_total", destination=dest)
    plain = metric(m, "ferry_delivery_sent_json_bytes_total", destination=dest)
    up = scrape(up_port)
    stored = metric(up, "ferry_ingest_events_total")
    reqs = metric(up, "ferry_ingest_requests_total")
    if dead or stored != events:
        sys.exit(f"forward: {label}: {dead:.0f} dead-lettered, the upstream stored {stored:.0f} of {events}")
    print(f"{label:6} {events / secs:10.0f} events/s  {secs:6.1f} s  wire {wire / events:6.1f} B/event  "
          f"JSON {plain / events:6.1f} B/event  (x{plain / wire:4.1f})  {reqs:.0f} requests  "
          f"CPU edge {ecpu:5.1f} s, upstream {ucpu:5.1f} s")


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
PY

config() { # file data_dir port key [extra]
  cat >"$1" <<EOF
listen = "127.0.0.1:$3"
data_dir = "$2"
admin_token = "$ADMIN"
[[sources]]
name = "src"
write_key = "$4"
$5
EOF
}

start() { # config log; sets STARTED to the pid (a child of this shell, so `wait` works)
  "$WORK/ferry" serve --config "$1" >"$2" 2>&1 &
  STARTED=$!
}

# 1. Fill the edge.
config "$WORK/edge-fill.toml" "$WORK/edge" "$EDGE_PORT" "$EDGE_KEY" ""
start "$WORK/edge-fill.toml" "$WORK/edge-fill.log"
EDGE_PID=$STARTED
PIDS="$EDGE_PID"
BODIES="$(python3 "$WORK/fwd.py" bodies "$WORK" "$USERS")"
python3 "$WORK/fwd.py" wait_up "$EDGE_PORT" >/dev/null
args=()
IFS=, read -ra paths <<<"$BODIES"
for b in "${paths[@]}"; do args+=(--body "$b"); done
AUTH="Authorization: Basic $(printf '%s:' "$EDGE_KEY" | base64)"
t0=$(date +%s.%N)
"$LOAD_BIN" --url "http://127.0.0.1:$EDGE_PORT/v1/batch" -c 32 -n "$REQUESTS" -H "$AUTH" "${args[@]}" >"$WORK/fill.out" 2>&1 ||
  { tail -5 "$WORK/fill.out"; die "filling failed"; }
t1=$(date +%s.%N)
kill "$EDGE_PID"
wait "$EDGE_PID" || die "the edge did not stop cleanly after the fill (see $WORK/edge-fill.log)"
echo "forward: filled $EVENTS events ($USERS users) in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s; $(nproc) cores" >&2

# 2. Drain into a fresh upstream, once per pass.
echo "pass      events/s  time      bytes per event on the wire and as JSON    upstream requests, CPU"
for pass in $PASSES; do
  gzip=true; [ "$pass" = plain ] && gzip=false
  rm -rf "$WORK/up"
  config "$WORK/up.toml" "$WORK/up" "$UP_PORT" "$UP_KEY" ""
  start "$WORK/up.toml" "$WORK/up-$pass.log"
  UP_PID=$STARTED
  PIDS="$UP_PID"
  python3 "$WORK/fwd.py" wait_up "$UP_PORT" >/dev/null
  dest="central-$pass"
  config "$WORK/edge-$pass.toml" "$WORK/edge" "$EDGE_PORT" "$EDGE_KEY" "
[[destinations]]
name = \"$dest\"
type = \"segment\"
url = \"http://127.0.0.1:$UP_PORT\"
write_key = \"$UP_KEY\"
gzip = $gzip
start = \"earliest\"
$DEST_OPTS"
  start "$WORK/edge-$pass.toml" "$WORK/edge-$pass.log"
  EDGE_PID=$STARTED
  PIDS="$UP_PID $EDGE_PID"
  python3 "$WORK/fwd.py" drain "$EDGE_PORT" "$UP_PORT" "$EDGE_PID" "$UP_PID" "$EVENTS" "$dest" "$pass"
  kill "$EDGE_PID" "$UP_PID"
  wait "$EDGE_PID" || die "the edge did not stop cleanly (see $WORK/edge-$pass.log)"
  wait "$UP_PID" || die "the upstream did not stop cleanly (see $WORK/up-$pass.log)"
  PIDS=""
done
