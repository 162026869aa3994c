#!/usr/bin/env bash
# ferry's memory footprint as a new user meets it: release build, default
# configuration, empty data directory, on this machine. Prints each figure
# beside its goal (docs/benchmarks.md, "Memory and start-up").
#
#   benches/footprint.sh                       # 40 s of full-rate ingest
#   DURATION=10s benches/footprint.sh          # a short check
#   BIN=/path/to/ferry benches/footprint.sh    # another build (no cargo build)
#   SMAPS=1 benches/footprint.sh               # also where the memory is at each
#       # point: /proc/PID/smaps_rollup and the largest mappings of /proc/PID/smaps
#   EXTRA_TOML='[memory]
#   budget = "64MiB"' benches/footprint.sh     # with extra configuration
#   START_VS=/path/to/other/ferry benches/footprint.sh  # only start to serving: STARTS
#       # starts of each build, interleaved (start-up times drift with the machine's load)
#
# The figures:
#   start    time from exec of `ferry serve` (no config file: the embedded
#            default, its file destination) on an empty data directory to the
#            "ferry listening" line, the median of STARTS (5) starts
#   idle     VmRSS of that server 2 s after it started serving (the last start)
#   trickle  VmRSS of the server configured below, 2 s after TRICKLE (10,000)
#            events with fresh messageIds came in 100-event requests (a small
#            box: the dedup filters are sized for the ids it has seen)
#   peak     VmHWM (peak RSS) of a server given one source and one webhook
#            destination pointed at a closed port (every delivery fails, so
#            the backlog grows), everything else at its defaults, while
#            load_gen sends 100-event /v1/batch requests (minimal ~340 B
#            events, a fresh messageId each) for DURATION over CONNS (64)
#            connections, closed loop; backlog = ferry_delivery_lag_events
#   restart  VmRSS of the same server restarted on that data directory
#            (destination still down), SETTLE (10 s) after it serves again;
#            and its VmHWM over the restart
# load_gen and ferry share this machine's cores: report the settings line.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-40s}"
CONNS="${CONNS:-64}"
STARTS="${STARTS:-5}"
SETTLE="${SETTLE:-10}"
PORT="${PORT:-18090}"
KEY="wk_footprint"

WORK="$(mktemp -d)"
PID=""
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

. benches/common/bench_bin.sh
LOAD_BIN="$(bench_bin load_gen)"
if [ -z "${BIN:-}" ]; then
  # After the bench: building it turns on the test-only `testing` feature
  # (through the dev-dependency on ferry itself); this puts the plain binary back.
  cargo build --release --quiet --bin ferry
  BIN="${CARGO_TARGET_DIR:-target}/release/ferry"
fi

status() { # field of /proc/PID/status in KiB
  awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"
}
smaps() { # where the memory of process $1 is, with SMAPS=1
  [ "${SMAPS:-}" = 1 ] || return 0
  echo "--- $2: /proc/$1/smaps_rollup"
  grep -E '^(Rss|Pss_Anon|Pss_File|Anonymous|AnonHugePages)' "/proc/$1/smaps_rollup"
  echo "--- $2: largest mappings by RSS (KiB, size KiB, name)"
  awk '/^[0-9a-f]+-[0-9a-f]+ / {split($1, a, "-"); name = ($6 == "" ? "[anon]" : $6); next}
       /^Size:/ {size = $2} /^Rss:/ {if ($2 > 256) print $2, size, name}' "/proc/$1/smaps" \
    | sort -rn | head -n 12
}
serve() { # config-args... : starts ferry, waits for its listening line; sets PID and MS
  local out="$WORK/serve.out"
  : >"$out"
  local t0
  t0="$(date +%s%N)"
  FERRY_LOG=warn "$BIN" serve "$@" >"$out" 2>>"$WORK/serve.err" &
  PID=$!
  for _ in $(seq 2000); do
    if grep -q "ferry listening" "$out"; then
      MS=$((($(date +%s%N) - t0) / 1000000))
      return 0
    fi
    if ! kill -0 "$PID" 2>/dev/null; then break; fi
    sleep 0.005
  done
  echo "ferry did not start:" >&2
  tail -n 5 "$WORK/serve.err" >&2
  exit 1
}
stop() {
  kill -TERM "$PID"
  wait "$PID" 2>/dev/null || true
  PID=""
}

if [ -n "${START_VS:-}" ]; then
  python3 - "$BIN" "$START_VS" "$STARTS" "$PORT" "$WORK" <<'PY'
import os, shutil, statistics, subprocess, sys, tempfile, time
this, other, n, port, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
times = {this: [], other: []}
for i in range(n):
    for b in ((this, other) if i % 2 == 0 else (other, this)):
        d = tempfile.mkdtemp(dir=work)
        t0 = time.monotonic()
        p = subprocess.Popen([b, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", f"{d}/data"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             env={**os.environ, "FERRY_LOG": "warn"})
        for line in p.stdout:
            if b"ferry listening" in line:
                break
        times[b].append((time.monotonic() - t0) * 1000)
        p.terminate()
        p.wait()
        shutil.rmtree(d)
for b, t in times.items():
    print(f"start to serving, {b}: median {statistics.median(t):.0f} ms ({min(t):.0f}-{max(t):.0f}) of {n}")
PY
  exit 0
fi

# 1. Start to serving, and idle RSS, with no configuration at all.
starts=()
for i in $(seq "$STARTS"); do
  rm -rf "$WORK/idle-data"
  serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/idle-data"
  starts+=("$MS")
  if [ "$i" -lt "$STARTS" ]; then stop; fi
done
sleep 2
IDLE_KIB="$(status "$PID" VmRSS)"
smaps "$PID" idle
stop
START_MS="$(printf '%s\n' "${starts[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')"

# 2. Full-rate ingest with the only destination down.
python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' >"$WORK/closed-port"
CLOSED="$(cat "$WORK/closed-port")" # bound a moment and released: nothing listens there
cat >"$WORK/ferry.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$WORK/data"
[[sources]]
name = "load"
write_key = "$KEY"
[[destinations]]
name = "down"
type = "webhook"
url = "http://127.0.0.1:$CLOSED/hook"
${EXTRA_TOML:-}
TOML
python3 - "$WORK" <<'PY'
import json, sys
sys.path.insert(0, "benches/common")
from sdk_events import minimal
batch = {"batch": [minimal(i) for i in range(100)], "sentAt": "2024-05-01T12:00:00.000Z"}
open(f"{sys.argv[1]}/batch.json", "w").write(json.dumps(batch))
PY
serve --config "$WORK/ferry.toml"
AUTH="Authorization: Basic $(printf '%s:' "$KEY" | base64)"
python3 - "$PORT" "$KEY" "${TRICKLE:-10000}" <<'PY'
import base64, json, sys, urllib.request, uuid
sys.path.insert(0, "benches/common")
from sdk_events import minimal
port, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
for start in range(0, n, 100):
    events = [dict(minimal(i), messageId=str(uuid.uuid4())) for i in range(start, min(n, start + 100))]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/batch", json.dumps({"batch": events}).encode(),
                                 {"Content-Type": "application/json", "Authorization": auth})
    urllib.request.urlopen(req).read()
PY
sleep 2
TRICKLE_KIB="$(status "$PID" VmRSS)"
smaps "$PID" "after the trickle"
"$LOAD_BIN" -z "$DURATION" -c "$CONNS" -H "$AUTH" --url "http://127.0.0.1:$PORT/v1/batch" \
  --body "$WORK/batch.json" >"$WORK/load.out"
RATE="$(awk '/Requests\/sec/ {print $2 * 100}' "$WORK/load.out")"
grep -E "Success rate|\[[0-9]{3}\] [0-9]+ responses" "$WORK/load.out" | sed 's/^/load_gen: /'
scrape() { # metric name (summed over its series)
  curl -s "http://127.0.0.1:$PORT/metrics" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $2} END {printf "%.0f\n", s}'
}
BACKLOG="$(scrape ferry_delivery_lag_events)"
PEAK_KIB="$(status "$PID" VmHWM)"
smaps "$PID" "after ingest"
if [ "${SMAPS:-}" = 1 ]; then curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^ferry_(memory|dedup_bloom)' || true; fi
stop

# 3. Restart on that backlog, destination still down.
serve --config "$WORK/ferry.toml"
RESTART_MS="$MS"
sleep "$SETTLE"
RESTART_KIB="$(status "$PID" VmRSS)"
RESTART_HWM_KIB="$(status "$PID" VmHWM)"
BACKLOG_AFTER="$(scrape ferry_delivery_lag_events)"
smaps "$PID" "after restart"
stop

python3 - "$START_MS" "$IDLE_KIB" "$TRICKLE_KIB" "$PEAK_KIB" "$RESTART_KIB" "$RESTART_HWM_KIB" "$BACKLOG" \
  "$BACKLOG_AFTER" "$RATE" "$RESTART_MS" "${starts[*]}" "${TRICKLE:-10000}" <<'PY'
import sys
start, idle, trickle, peak, restart, restart_hwm, backlog, backlog2, rate, restart_ms, starts, _ = sys.argv[1:]
def size(kib):  # the goals are in MB (10^6 bytes)
    return int(kib) * 1024 / 1e6
def shown(kib):
    return f"{size(kib):.1f} MB ({int(kib) / 1024:.1f} MiB)"
rows = [
    ("idle RSS after start, default config", shown(idle), "≤ 20 MB", size(idle) <= 20),
    (f"RSS after {int(sys.argv[-1]):,} events, the same server as below", shown(trickle),
     "–", None),
    (f"peak RSS during ingest ({float(rate):,.0f} events/s), destination down, "
     f"backlog {int(backlog):,} events", shown(peak), "≤ 128 MB", size(peak) <= 128),
    (f"RSS after a restart with that backlog (peak during it {size(restart_hwm):.1f} MB; "
     f"backlog {int(backlog2):,})", shown(restart), "≤ 64 MB", size(restart) <= 64),
    (f"start to serving, empty data dir (median of {starts.replace(' ', ', ')} ms)",
     f"{start} ms", "≤ 100 ms", int(start) <= 100),
]
print("\n| figure | measured | goal | met |\n|---|---|---|---|")
for name, value, goal, met in rows:
    print(f"| {name} | {value} | {goal} | {'–' if met is None else 'yes' if met else 'no'} |")
print(f"restart with the backlog: serving after {restart_ms} ms")
PY
echo "settings: DURATION=$DURATION CONNS=$CONNS STARTS=$STARTS SETTLE=${SETTLE}s BIN=$BIN EXTRA_TOML=${EXTRA_TOML:-none}, $(nproc) cores shared by load_gen and ferry"
