#!/usr/bin/env bash
# Load test of ferry's ingest API (durable acks) against a bare axum baseline,
# both release builds on this machine, driven by benches/load_gen.rs, which
# puts a fresh, unique messageId in every event as the SDKs do (IDS=0: sends
# the events without ids, so the server generates them and dedup skips them).
#
#   benches/ingest_load.sh                 # 10 s per scenario
#   DURATION=30s CONNS=64 RATE=5000 ROUNDS=3 benches/ingest_load.sh
#   ONLY=batch ROUNDS=4 DURATION=6s benches/ingest_load.sh   # dedup on/off rounds of /v1/batch only
#   WARMUP=40s ONLY=batch ROUNDS=8 DURATION=6s benches/ingest_load.sh
#       # the same after loading each server for 40 s first (unmeasured), so
#       # the rounds run with a full dedup index (10M ids held, sealed generations)
#   THREADS=1 ...                          # also each server thread's CPU and context
#       # switches (voluntary: waits; involuntary: preempted) per request
#   SIMUL=1 WARMUP=40s ROUNDS=6 DURATION=10s benches/ingest_load.sh
#       # dedup on and off loaded at the same time ($CONNS/2 connections each), /v1/batch
#       # only: per round, both servers' CPU per request under the same machine state
#   AA=1 ...                               # both servers with dedup on: an A/A run, whose
#       # on/off ratio shows how far apart two identical servers measure on this machine
#   AA=1 SECOND_BIN=/path/to/other/ferry ... # the same, the second server running another
#       # build: an A/B of two builds in ABBA order (ratio = this tree's build / the other)
#   POLL=1 SIMUL=1 ...                     # also read both servers' /metrics every 250 ms
#       # during each round (requests/s, mean WAL fsync, the dedup server's pending ids)
#       # and print the dedup server's generation seals with their times
#   SHAPE=browser ...                      # events shaped as analytics.js sends the spec's
#       # "Product Viewed" (page, userAgent, 13 properties; ~1.1 KB) instead of the
#       # minimal ~340 B event (SHAPE=minimal, the default)
#
# Scenarios, each against ferry (dedup on, the default), ferry with dedup off,
# and the bare handler (two ferry servers idle while the third target is loaded):
#   1. POST /v1/batch, 100 events of ~340 B each (SHAPE=browser: ~1.1 KB), $CONNS connections, closed loop
#   2. POST /v1/track, one event, $CONNS connections, closed loop
#   3. POST /v1/track at a fixed $RATE req/s (latency at a fixed load, counted
#      from each request's due time)
# Disk: each server stores about 56 KB per request of 100 minimal events, and
# nothing is deleted while the script runs. A SIMUL run with 40 s warm-ups and
# 6 rounds writes about 20 GB. With less free space than that, the servers
# reach their free-space reserve and answer 503, and the script stops.
# Events/s through /v1/batch = requests/s × 100. The load generator shares the
# CPU with the server: report these settings with the figures.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
CONNS="${CONNS:-64}"
RATE="${RATE:-5000}"
ROUNDS="${ROUNDS:-3}"
ONLY="${ONLY:-all}"
WARMUP="${WARMUP:-}"
FERRY_PORT="${FERRY_PORT:-18080}"
BARE_PORT="${BARE_PORT:-18081}"
KEY="wk_load_test"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

. benches/common/bench_bin.sh
BARE_BIN="$(bench_bin bare_axum)"
LOAD_BIN="$(bench_bin load_gen)"
# Built after the benches: building them turns on the test-only `testing`
# feature (through the dev-dependency on ferry itself) and rebuilds ferry with
# it; this build puts the plain release binary back.
cargo build --release --quiet --bin ferry
KEEP_IDS=()
if [ "${IDS:-1}" = 0 ]; then KEEP_IDS=(--keep-ids); fi

NODEDUP_PORT="${NODEDUP_PORT:-18082}"
SECOND_DEDUP=false
if [ "${AA:-}" = 1 ]; then SECOND_DEDUP=true; fi
for variant in "ferry:$FERRY_PORT:true" "ferry-nodedup:$NODEDUP_PORT:$SECOND_DEDUP"; do
  IFS=: read -r vname vport vdedup <<<"$variant"
  cat > "$WORK/$vname.toml" <<TOML
listen = "127.0.0.1:$vport"
data_dir = "$WORK/$vname-data"
[[sources]]
name = "load"
write_key = "$KEY"
[limits]
max_in_flight = 4096
[dedup]
enabled = $vdedup
TOML
done

python3 - "$WORK" "${SHAPE:-minimal}" <<'PY'
import json, sys
sys.path.insert(0, "benches/common")
from sdk_events import browser, minimal
work = sys.argv[1]
shape = sys.argv[2]
if shape not in ("minimal", "browser"):
    sys.exit(f"SHAPE must be minimal or browser, not {shape!r}")
event = minimal if shape == "minimal" else browser
batch = {"batch": [event(i) for i in range(100)], "sentAt": "2024-05-01T12:00:00.000Z"}
open(f"{work}/batch.json", "w").write(json.dumps(batch))
single = dict(event(0)); del single["type"]
open(f"{work}/track.json", "w").write(json.dumps(single))
sizes = [len(json.dumps(e)) for e in batch["batch"]]
print(f"batch body {len(json.dumps(batch))} B, events ~{sum(sizes)//len(sizes)} B each", file=sys.stderr)
PY

declare -A PID_OF
for vname in ferry ferry-nodedup; do
  bin="${CARGO_TARGET_DIR:-target}/release/ferry"
  if [ "$vname" = ferry-nodedup ] && [ -n "${SECOND_BIN:-}" ]; then bin="$SECOND_BIN"; fi
  # POLL=1 also logs each dedup generation rotation and seal (debug level).
  FERRY_LOG="${FERRY_LOG:-$([ "${POLL:-}" = 1 ] && echo "info,ferry::dedup=debug" || echo info)}" \
    "$bin" serve --config "$WORK/$vname.toml" >"$WORK/$vname.out" 2>"$WORK/$vname.err" &
  PIDS+=($!)
  PID_OF[$vname]=$!
done
FERRY_BARE_LISTEN="127.0.0.1:$BARE_PORT" "$BARE_BIN" >"$WORK/bare.out" 2>&1 &
PIDS+=($!)
for url in "http://127.0.0.1:$FERRY_PORT/health" "http://127.0.0.1:$NODEDUP_PORT/health" "http://127.0.0.1:$BARE_PORT/"; do
  for _ in $(seq 100); do
    curl -s -o /dev/null "$url" && break
    sleep 0.1
  done
done

AUTH="Authorization: Basic $(printf '%s:' "$KEY" | base64)"
run() { # name url body extra-args...
  local name="$1" url="$2" body="$3"; shift 3
  echo "=== $name ($url, body $body, $*)"
  "$LOAD_BIN" -z "$DURATION" -H "$AUTH" --url "$url" --body "$WORK/$body" "${KEEP_IDS[@]}" "$@" \
    | grep -E "Success rate|Requests/sec|50.00%|99.00%|99.90%|\[[0-9]{3}\] [0-9]+ responses"
}

cpu_ticks() { # utime + stime of a process, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}
thread_ticks() { # per thread of a process: name user-ticks system-ticks voluntary involuntary
  local t
  for t in /proc/"$1"/task/*; do
    printf '%s %s %s\n' "$(tr ' ' _ <"$t/comm")" "$(awk '{print $14, $15}' "$t/stat")" \
      "$(awk '/^voluntary_ctxt/ {v = $2} /^nonvoluntary_ctxt/ {n = $2} END {print v, n}' "$t/status")"
  done 2>/dev/null
}
io_bytes() { # bytes a process passed to write and read calls (/proc/PID/io wchar, rchar)
  awk '/^wchar/ {w = $2} /^rchar/ {r = $2} END {print w, r}' "/proc/$1/io"
}
run_cpu() { # like run, then the server's CPU time per request (per thread with THREADS=1)
  local pid="$1"; shift
  local before after out threads_before threads_after io_before io_after
  before="$(cpu_ticks "$pid")"
  threads_before="$(thread_ticks "$pid")"
  io_before="$(io_bytes "$pid")"
  out="$(run "$@")"
  after="$(cpu_ticks "$pid")"
  threads_after="$(thread_ticks "$pid")"
  io_after="$(io_bytes "$pid")"
  echo "$out"
  python3 - "$out" "$before" "$after" "$(getconf CLK_TCK)" "$DURATION" "${THREADS:-0}" "$threads_before" "$threads_after" "$io_before" "$io_after" <<'PY'
import collections, re, sys
out, before, after, hz, dur, threads, tb, ta, iob, ioa = sys.argv[1:]
rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
secs = float(dur.rstrip("s"))
cpu = (float(after) - float(before)) / float(hz)
n = rps * secs
print(f"  server CPU: {cpu / secs:.2f} cores, {1000 * cpu / n:.3f} ms/request")
(wb, rb), (wa, ra) = map(int, iob.split()), map(int, ioa.split())
print(f"  server I/O calls: {(wa - wb) / n / 1000:.1f} KB written, {(ra - rb) / n / 1000:.1f} KB read per request")
if threads == "1":
    def load(text):
        d = collections.defaultdict(lambda: [0, 0, 0, 0])
        for line in text.splitlines():
            fields = line.split()
            if len(fields) != 5:
                continue  # a thread that ended while being read
            for i, v in enumerate(fields[1:]):
                d[fields[0]][i] += int(v)
        return d
    b, a = load(tb), load(ta)
    us = 1e6 / float(hz) / n  # µs of CPU per request per tick
    parts, switches = [], []
    for name in sorted(a):
        du, ds, dv, di = (a[name][i] - b[name][i] for i in range(4))
        if du + ds:
            parts.append(f"{name} {du * us:.0f}+{ds * us:.0f}")
        if dv + di:
            switches.append(f"{name} {dv / n:.3f}+{di / n:.3f}")
    print("  per thread, µs/request user+system: " + ", ".join(parts))
    print("  per thread, context switches/request voluntary+involuntary: " + ", ".join(switches))
PY
}

if [ -n "$WARMUP" ]; then
  for port in "$FERRY_PORT" "$NODEDUP_PORT"; do
    echo "=== warm-up of :$port for $WARMUP (not measured)"
    "$LOAD_BIN" -z "$WARMUP" -H "$AUTH" --url "http://127.0.0.1:$port/v1/batch" \
      --body "$WORK/batch.json" "${KEEP_IDS[@]}" -c "$CONNS" | grep -E "Requests/sec"
  done
fi

if [ "${SIMUL:-}" = 1 ]; then
  # Dedup on and off loaded at the same time, $CONNS/2 connections each, $ROUNDS rounds: both
  # servers then run under the same machine state (other tenants, page cache, clock speed),
  # which alternating rounds cannot give on this shared machine. Each round prints both
  # servers' rates and CPU per request; the summary quotes the medians of the per-round
  # ratios. The CPU per request ratio (off / on) is what decides the throughput ratio of a
  # CPU-bound server; the throughput ratio here also depends on how the kernel shares the
  # cores between the two. AA=1 SIMUL=1 gives the method's own spread.
  half=$((CONNS / 2))
  for round in $(seq "$ROUNDS"); do
    declare -A before
    for name in ferry ferry-nodedup; do before[$name]="$(cpu_ticks "${PID_OF[$name]}")"; done
    "$LOAD_BIN" -z "$DURATION" -H "$AUTH" --url "http://127.0.0.1:$FERRY_PORT/v1/batch" \
      --body "$WORK/batch.json" "${KEEP_IDS[@]}" -c "$half" >"$WORK/simul-on.out" &
    on_pid=$!
    "$LOAD_BIN" -z "$DURATION" -H "$AUTH" --url "http://127.0.0.1:$NODEDUP_PORT/v1/batch" \
      --body "$WORK/batch.json" "${KEEP_IDS[@]}" -c "$half" >"$WORK/simul-off.out" &
    off_pid=$!
    if [ "${POLL:-}" = 1 ]; then
      python3 - "$DURATION" "$FERRY_PORT" "$NODEDUP_PORT" "$round" <<'PY' &
# Every 250 ms: each server's requests/s and mean WAL fsync (ms) over the
# interval, and the first server's dedup ids pending (not yet in the index).
import re, sys, time, urllib.request
dur, ports, rnd = float(sys.argv[1].rstrip("s")), sys.argv[2:4], sys.argv[4]
def num(text, name):
    return sum(float(v) for v in re.findall("^" + name + r"(?:\{[^}]*\})? (\S+)", text, re.M))
def scrape(port):
    t = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    return [num(t, n) for n in ("ferry_ingest_requests_total", "ferry_log_fsync_duration_seconds_sum",
                                "ferry_log_fsync_duration_seconds_count", "ferry_dedup_pending_ids")]
end, prev = time.time() + dur - 0.5, None
while time.time() < end:
    t0 = time.time()
    now = [scrape(p) for p in ports]
    if prev:
        dt, cols = t0 - prev[0], []
        for a, b in zip(now, prev[1]):
            fsync = 1000 * (a[1] - b[1]) / max(1, a[2] - b[2])
            cols.append(f"{(a[0] - b[0]) / dt:6.0f} req/s {fsync:5.2f} ms")
        stamp = time.strftime("%H:%M:%S", time.gmtime(t0)) + f".{int(t0 % 1 * 100):02d}"
        print(f"poll round {rnd} {stamp} first {cols[0]} | second {cols[1]} | "
              f"first pending {now[0][3]:.0f}", flush=True)
    prev = (t0, now)
    time.sleep(max(0.0, 0.25 - (time.time() - t0)))
PY
      poll_pid=$!
    fi
    wait "$on_pid" "$off_pid"
    if [ "${POLL:-}" = 1 ]; then wait "$poll_pid"; fi
    python3 - "$round" "$(getconf CLK_TCK)" "$DURATION" "$SECOND_DEDUP" \
      "$WORK/simul-on.out" "${before[ferry]}" "$(cpu_ticks "${PID_OF[ferry]}")" \
      "$WORK/simul-off.out" "${before[ferry-nodedup]}" "$(cpu_ticks "${PID_OF[ferry-nodedup]}")" \
      <<'PY' | tee -a "$WORK/simul.log" || { tail -n 3 "$WORK"/ferry*.err >&2; exit 1; }
import re, sys
rnd, hz, dur = sys.argv[1], float(sys.argv[2]), float(sys.argv[3].rstrip("s"))
# With AA=1 both servers run dedup on: the ratios are then second server / first.
pair = "second/first" if sys.argv[4] == "true" else "off/on"
del sys.argv[4]
def server(out, before, after):
    text = open(out).read()
    codes = re.findall(r"\[(\d{3})\] \d+ responses", text)
    if float(re.search(r"Success rate:\s+([0-9.]+)", text).group(1)) < 1 or codes != ["200"]:
        name = "ferry" if out.endswith("simul-on.out") else "ferry-nodedup"
        sys.exit(f"round {rnd}: {name} did not answer every request with 200 "
                 f"(its last log lines follow):\n{text}")
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", text).group(1))
    return rps, (float(after) - float(before)) / hz / (rps * dur) * 1000
on_rps, on_ms = server(*sys.argv[4:7])
off_rps, off_ms = server(*sys.argv[7:10])
print(f"=== simultaneous round {rnd}: ferry {on_rps:.0f} req/s, {on_ms:.3f} ms CPU/request; "
      f"ferry-nodedup {off_rps:.0f} req/s, {off_ms:.3f} ms CPU/request; "
      f"throughput ratio {on_rps / off_rps:.3f}, CPU per request {pair} {off_ms / on_ms:.3f}")
PY
  done
  python3 - "$WORK/simul.log" "$SECOND_DEDUP" <<'PY'
import re, statistics, sys
rows = re.findall(r"throughput ratio ([0-9.]+), CPU per request (?:off/on|second/first) ([0-9.]+)",
                  open(sys.argv[1]).read())
pair = "second/first" if sys.argv[2] == "true" else "off/on"
tput, cpu = [float(t) for t, _ in rows], [float(c) for _, c in rows]
print(f"summary simultaneous /v1/batch x100 events: throughput ratio median {statistics.median(tput):.3f} "
      f"(geometric mean {statistics.geometric_mean(tput):.3f}), CPU per request {pair} median "
      f"{statistics.median(cpu):.3f} (geometric mean {statistics.geometric_mean(cpu):.3f}); "
      f"per round {' '.join(f'{c:.3f}' for c in cpu)}")
PY
  if [ "${POLL:-}" = 1 ]; then
    echo "dedup generations of the first server (UTC):"
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/ferry.err" | grep -E "rotated to a new generation|sealed generation" || true
  fi
  echo "settings: SIMUL=1 POLL=${POLL:-0} DURATION=$DURATION CONNS=$CONNS ($half per server) ROUNDS=$ROUNDS WARMUP=${WARMUP:-none} AA=${AA:-0} SECOND_BIN=${SECOND_BIN:-none} IDS=${IDS:-1}, $(nproc) cores shared by both load generators and both servers"
  exit 0
fi

# Dedup on and off alternate, $ROUNDS rounds each, in the order on, off, off,
# on, on, off, … (ABBA): drift on this shared machine then hits both alike,
# a steady trend included (the page cache filling up makes later rounds
# faster; with on always first, off would always run later). Quote the
# medians, which the summary at the end prints.
for round in $(seq "$ROUNDS"); do
  order=("ferry:$FERRY_PORT" "ferry-nodedup:$NODEDUP_PORT")
  if [ $((round % 2)) -eq 0 ]; then
    order=("ferry-nodedup:$NODEDUP_PORT" "ferry:$FERRY_PORT")
  fi
  for target in "${order[@]}"; do
    name="${target%%:*}"; port="${target##*:}"
    run_cpu "${PID_OF[$name]}" "$name /v1/batch x100 events, round $round" "http://127.0.0.1:$port/v1/batch" batch.json -c "$CONNS" | tee -a "$WORK/rounds.log"
    if [ "$ONLY" != batch ]; then
      run_cpu "${PID_OF[$name]}" "$name /v1/track, round $round" "http://127.0.0.1:$port/v1/track" track.json -c "$CONNS" | tee -a "$WORK/rounds.log"
    fi
  done
done
python3 - "$WORK/rounds.log" "$SECOND_DEDUP" "${SECOND_BIN:-}" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
for path in ("/v1/batch x100 events", "/v1/track"):
    rates = {"ferry": {}, "ferry-nodedup": {}}
    for name, rnd, rps in re.findall(
            r"=== (ferry(?:-nodedup)?) " + re.escape(path) + r", round (\d+) .*?Requests/sec:\s+([0-9.]+)",
            text, re.S):
        rates[name][int(rnd)] = float(rps)
    on, off = rates["ferry"], rates["ferry-nodedup"]
    if not on or not off:
        continue
    pairs = [on[r] / off[r] for r in sorted(on) if r in off]
    second = "second server, also dedup on (A/A)" if sys.argv[2] == "true" else "off"
    if sys.argv[3]:
        second = f"second server ({sys.argv[3]}, dedup {'on' if sys.argv[2] == 'true' else 'off'})"
    print(f"summary {path}: dedup on {statistics.median(on.values()):.0f} req/s, "
          f"{second} {statistics.median(off.values()):.0f} req/s (medians), "
          f"ratio {statistics.median(on.values()) / statistics.median(off.values()):.3f}; "
          f"per round {' '.join(f'{p:.2f}' for p in pairs)} "
          f"(median {statistics.median(pairs):.3f}, geometric mean {statistics.geometric_mean(pairs):.3f})")
PY
settings() {
  echo "settings: DURATION=$DURATION CONNS=$CONNS RATE=$RATE ROUNDS=$ROUNDS ONLY=$ONLY WARMUP=${WARMUP:-none} THREADS=${THREADS:-0} AA=${AA:-0} SECOND_BIN=${SECOND_BIN:-none} IDS=${IDS:-1}, $(nproc) cores shared by load_gen and the servers"
}
if [ "$ONLY" = batch ]; then settings; exit 0; fi
for target in "ferry:$FERRY_PORT" "ferry-nodedup:$NODEDUP_PORT" "bare-axum:$BARE_PORT"; do
  name="${target%%:*}"; port="${target##*:}"
  if [ "$name" = bare-axum ]; then
    run "$name /v1/batch x100 events" "http://127.0.0.1:$port/v1/batch" batch.json -c "$CONNS"
    run "$name /v1/track" "http://127.0.0.1:$port/v1/track" track.json -c "$CONNS"
  fi
  run "$name /v1/track at $RATE req/s" "http://127.0.0.1:$port/v1/track" track.json -c "$CONNS" -q "$RATE"
done
settings
