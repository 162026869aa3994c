#!/usr/bin/env bash
# End-to-end load of ferry: sustained ingest at fixed rates while ferry
# delivers every event to a webhook and a JSON Lines file (MODE=rates), and
# the time each destination type takes to deliver a stored backlog
# (MODE=drain). Release build of ferry; SDK-shaped events; everything on
# 127.0.0.1; the load generator (benches/load_gen.rs), the webhook receiver
# (benches/webhook_sink.rs, one current-thread runtime that counts events and
# answers 200) and ferry share this machine's cores: report the settings line
# with the figures.
#
#   benches/e2e_load.sh                                  # rates 50k 100k 150k 200k events/s, 60 s each
#   RATES="20000 50000" DURATION=10s benches/e2e_load.sh # a short check
#   USERS=97 WEBHOOK_BATCH=100 benches/e2e_load.sh       # fewer users, smaller webhook batches
#   FILE_OPTS='batch_size = 500' benches/e2e_load.sh     # the file destination with other settings
#   DESTS=webhook benches/e2e_load.sh                    # only the webhook destination
#   DESTS=none benches/e2e_load.sh                       # no destinations: the ingest baseline
#   MODE=drain benches/e2e_load.sh                       # 5M-event backlog, drained by each destination type
#   MODE=drain EVENTS=200000 benches/e2e_load.sh         # a short check
#
# MODE=rates (the default). For each rate in RATES (events/s), a fresh ferry
# on a fresh, empty data directory (so the rates are independent: every run
# starts with no backlog, an empty log and an empty dedup index), configured
# with one source and two destinations:
#   webhook  type = "webhook", url = the sink, batch_size = $WEBHOOK_BATCH (500),
#            other keys at their defaults (concurrency 16, window derived
#            from batch_size × concurrency, batch_max_bytes 512 KiB, which caps
#            a batch at ~400 of these events)
#   file     type = "file", only name and path (all defaults: batch_size 1000,
#            i.e. one write and one fdatasync per 1000 events)
# load_gen sends POST /v1/batch bodies of 100 events open loop at RATE/100
# requests/s for DURATION over at most CONNS connections; each request's
# latency counts from its due time, so queueing in ferry shows in the p99.
# Requests due before the end of DURATION are all sent, so when ferry cannot
# keep up the run lasts longer and the accepted rate falls below the offered.
# The window runs from just before the first request to just after the last
# answer. Every SAMPLE seconds (at most DURATION/10) the script reads
# ferry's /metrics. It reports:
#   accepted     events answered 200 / the load's wall time
#   delivered    per destination, the increase of ferry_delivery_delivered_total
#                over the window / the window's seconds
#   backlog      ferry_delivery_lag_events (events between the destination's
#                cursor and the log's durable end) at the start and at the end
#   backlog verdict: "growing" when the backlog at the end exceeds BOUND events
#                (20000 = twice a destination's default read-ahead window:
#                below that it is only events read ahead or in flight) AND the
#                slope of the samples taken in the last two thirds of the
#                window (the first third is the backlog settling at its working
#                level) exceeds 1 % of the accepted rate; otherwise "bounded".
#                The slope is Theil-Sen's (the median of the slopes between
#                every two samples), which one momentary spike does not move:
#                under full CPU a destination that keeps up still falls a few
#                hundred ms of ingest behind now and then
#   p99          load_gen's 99th percentile of ingest latency
#   ferry CPU    utime + stime of the ferry process over the window
#                (/proc/PID/stat), and per accepted event; idle % is the whole
#                machine's idle + iowait share over the window (/proc/stat)
# and then "sustained routing rate = the highest offered rate at which every
# request was answered 200, the accepted rate was at least 95 % of the offered
# one, and every destination's backlog stayed bounded". The webhook sink's own
# count of events received is printed beside ferry's delivered count.
# ferry keeps each user's events in order, so a destination has at most one
# event per user in flight: USERS bounds the events in flight, and so the
# size of a webhook batch (USERS=97 gives batches of at most 97 events).
# Time: about len(RATES) × (DURATION + 2 s), longer for rates ferry cannot
# accept (the load lasts until every due request is answered). Disk: each
# rate's data directory is deleted before the next; the largest rate needs
# up to rate × DURATION × 1.3 KB (the log keeps what a lagging destination
# has not passed; 200k events/s for 60 s: 15.6 GB), checked with `df` first.
#
# MODE=drain. Ingests EVENTS events (default 5,000,000, rounded up to whole
# requests of 100) into a ferry that has no destinations (so nothing is
# delivered while the backlog fills; [log] min_retention = "24h" keeps every
# segment afterwards), stops it, then for each of DRAIN_DESTS restarts ferry
# on the same data directory with only that destination, under a new name,
# with start = "earliest", and times it from the first /metrics answer until
# it has delivered (or dead-lettered) all EVENTS:
#   file           type = "file", only name and path (defaults)
#   webhook        type = "webhook", only name and url (defaults: one event per
#                  request, 16 requests in flight)
#   webhook-batch  the same with batch_size = $WEBHOOK_BATCH
# An event takes about 1.3 KB in the log (STORED_BYTES, measured with these
# events), so 5M events need about 6.5 GB, plus up to 600 MiB for the file
# destination's output (100 MiB × (1 + 5 rotated files)) and ferry's 64 MiB
# free-space reserve; the script checks `df` first and refuses without
# enough room. A drain that has not finished after DRAIN_TIMEOUT is reported
# as such with the rate it reached. Time: the fill (5M events at ~50-100k
# events/s here), then each drain (the unbatched webhook is the slow one:
# ~25,000 events/s here, so 5M events take about 3.5 minutes).
#
# Environment (defaults in brackets):
#   MODE           rates | drain [rates]
#   RATES          offered rates, events/s, space separated [50000 100000 150000 200000]
#   DURATION       load per rate: 60s, 2m, or plain seconds [60s]
#   USERS          distinct userIds, spread evenly over the events (each
#                  request carries 100 different users when USERS >= 100;
#                  at most 20000) [1000]
#   CONNS          load_gen connections (requests in flight at most; ferry's
#                  default limits.max_in_flight is 256) [128]
#   SAMPLE         seconds between /metrics samples (at most DURATION/10) [5]
#   DESTS          rates mode: destinations to configure, of "webhook file", or
#                  none (ingest alone, for a baseline) [webhook file]
#   WEBHOOK_BATCH  batch_size of the batched webhook destination [500]
#   WEBHOOK_OPTS   extra TOML lines for the webhook destination(s) (rates mode and
#                  the drain's webhook-batch), e.g. 'concurrency = 4' []
#   FILE_OPTS      extra TOML lines for the file destination, e.g. 'batch_size = 500' []
#   BOUND          backlog (events) up to which a destination counts as bounded [20000]
#   EVENTS         drain mode: backlog to fill [5000000]
#   DRAIN_DESTS    drain mode: of "file webhook webhook-batch" [file webhook webhook-batch]
#   DRAIN_TIMEOUT  drain mode: longest wait for one destination's drain [3600s]
#   FILL_CONNS     drain mode: load_gen connections while filling (closed loop) [64]
#   STORED_BYTES   log bytes per event assumed by the disk-space check [1300]
#   FERRY_PORT     ferry's port on 127.0.0.1 [18180]
#   SINK_PORT      the webhook sink's port on 127.0.0.1 [18181]
#   DATA_ROOT      where the temporary directory (data directories, logs) goes [$TMPDIR or /tmp]
#   FERRY_BIN      a ferry binary to measure instead of this tree's release build
#                  (then nothing of ferry is built) []
#   FERRY_LOG      ferry's log filter [info]
#   KEEP           1: keep the temporary directory (its path is printed) [0]
#
# Everything started here is stopped on exit, and the temporary directory
# removed (unless KEEP=1). A server that dies is named with its last log lines.
set -euo pipefail
cd "$(dirname "$0")/.."
export FERRY_BENCH_COMMON="$PWD/benches/common"  # sdk_events.py, ferry_bench.py: what the load scripts share

MODE="${MODE:-rates}"
RATES="${RATES:-50000 100000 150000 200000}"
DURATION="${DURATION:-60s}"
USERS="${USERS:-1000}"
CONNS="${CONNS:-128}"
SAMPLE="${SAMPLE:-5}"
DESTS="${DESTS:-webhook file}"
WEBHOOK_BATCH="${WEBHOOK_BATCH:-500}"
WEBHOOK_OPTS="${WEBHOOK_OPTS:-}"
FILE_OPTS="${FILE_OPTS:-}"
BOUND="${BOUND:-20000}"
EVENTS="${EVENTS:-5000000}"
DRAIN_DESTS="${DRAIN_DESTS:-file webhook webhook-batch}"
DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-3600s}"
FILL_CONNS="${FILL_CONNS:-64}"
STORED_BYTES="${STORED_BYTES:-1300}"
FERRY_PORT="${FERRY_PORT:-18180}"
SINK_PORT="${SINK_PORT:-18181}"
DATA_ROOT="${DATA_ROOT:-${TMPDIR:-/tmp}}"
export FERRY_LOG="${FERRY_LOG:-info}"
KEY="wk_e2e_load"

die() { echo "e2e_load: $*" >&2; exit 1; }
seconds() { # 60s, 2m, 1h, 60 -> whole seconds
  case "$1" in
    *[!0-9smh]* | "" | [smh]*) die "not a duration: $1 (use e.g. 60s, 2m or 60)" ;;
    *s) echo "${1%s}" ;;
    *m) echo $((${1%m} * 60)) ;;
    *h) echo $((${1%h} * 3600)) ;;
    *) echo "$1" ;;
  esac
}
case "$MODE" in rates | drain) ;; *) die "MODE must be rates or drain, not $MODE" ;; esac
DURATION_S="$(seconds "$DURATION")"
DRAIN_TIMEOUT_S="$(seconds "$DRAIN_TIMEOUT")"
[ "$DURATION_S" -gt 0 ] || die "DURATION must be at least 1s"
for v in USERS CONNS EVENTS WEBHOOK_BATCH BOUND FILL_CONNS STORED_BYTES FERRY_PORT SINK_PORT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || die "$v must be a positive whole number, not '${!v}'"
done
[[ "$SAMPLE" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SAMPLE must be a number of seconds, not '$SAMPLE'"
for r in $RATES; do
  [[ "$r" =~ ^[0-9]+$ ]] && [ "$r" -ge 100 ] || die "RATES holds '$r': rates are whole events/s, at least 100"
done
if [ "$DESTS" = none ]; then DESTS=""; fi
for d in $DESTS; do
  case "$d" in webhook | file) ;; *) die "DESTS holds '$d': use webhook and/or file, or none" ;; esac
done
for d in $DRAIN_DESTS; do
  case "$d" in webhook | webhook-batch | file) ;; *) die "DRAIN_DESTS holds '$d': use file, webhook, webhook-batch" ;; esac
done
[ "$USERS" -le 20000 ] || die "USERS is at most 20000 (one 113 KB request body per 100 users)"
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$FERRY_PORT" "$SINK_PORT"; do
  if port_busy "$p"; then die "something already listens on 127.0.0.1:$p; set FERRY_PORT / SINK_PORT"; fi
done

mkdir -p "$DATA_ROOT"
WORK="$(mktemp -d "$DATA_ROOT/ferry-e2e.XXXXXX")"
FERRY_PID=""
FERRY_ERR=""
SINK_PID=""
PY_PID=""
cleanup() {
  local pid
  if [ -f "$WORK/load_gen.pid" ]; then
    pid="$(cat "$WORK/load_gen.pid")"
    kill "$pid" 2>/dev/null || true
  fi
  for pid in $PY_PID $FERRY_PID $SINK_PID; do kill "$pid" 2>/dev/null || true; done
  for pid in $PY_PID $FERRY_PID $SINK_PID; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then
    echo "e2e_load: kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# --- disk space ------------------------------------------------------------
need_space() { # bytes what
  local avail
  avail="$(df -B1 --output=avail "$WORK" | tail -n 1 | tr -d ' ')"
  if [ "$avail" -lt "$1" ]; then
    die "$2 needs about $(($1 / 1000000000)) GB free on the file system of $WORK, which has $((avail / 1000000000)) GB; lower the load or set DATA_ROOT to a larger disk"
  fi
}
requests=$(((EVENTS + 99) / 100))
EVENTS=$((requests * 100))
if [ "$MODE" = rates ]; then
  # Each rate's data directory is deleted before the next starts: the largest
  # rate decides. The log keeps what the slowest destination has not passed
  # (at worst all of it); the file destination's output is at most 6 × 100 MiB.
  max_rate=0
  for r in $RATES; do if [ "$r" -gt "$max_rate" ]; then max_rate="$r"; fi; done
  need_space $((max_rate * DURATION_S * STORED_BYTES + 1000000000)) "a run at $max_rate events/s for ${DURATION_S} s"
else
  # The log, plus the file destination's output (6 × 100 MiB) and ferry's reserve.
  need_space $((EVENTS * STORED_BYTES + 1000000000)) "a backlog of $EVENTS events"
fi

# --- builds --------------------------------------------------------------
. benches/common/bench_bin.sh
LOAD_BIN="$(bench_bin load_gen)"
SINK_BIN="$(bench_bin webhook_sink)"
[ -x "$LOAD_BIN" ] || die "could not build the load_gen bench (cargo bench --bench load_gen --no-run)"
[ -x "$SINK_BIN" ] || die "could not build the webhook_sink bench (cargo bench --bench webhook_sink --no-run)"
# After the benches: building them also builds the ferry binary into
# target/release with the dev-dependency's `testing` feature. The measured
# binary is a copy of the plain release build, made last.
if [ -n "${FERRY_BIN:-}" ]; then
  [ -x "$FERRY_BIN" ] || die "FERRY_BIN=$FERRY_BIN is not an executable"
else
  cargo build --release --quiet --bin ferry
  cp "${CARGO_TARGET_DIR:-target}/release/ferry" "$WORK/ferry"
  FERRY_BIN="$WORK/ferry"
fi

# --- the helper: request bodies, the measured window, drains, tables ---------
cat >"$WORK/e2e.py" <<'PY'
import json, math, os, re, signal, subprocess, sys, time, urllib.request

sys.path.insert(0, os.environ["FERRY_BENCH_COMMON"])
from ferry_bench import cpu_ticks, metric, scrape, write_bodies  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def bodies(work, users):
    paths = write_bodies(work, users)
    with open(paths[-1]) as f:
        batch = json.load(f)
    sizes = [len(json.dumps(e)) for e in batch["batch"]]
    print(f"{len(paths)} request bodies of 100 events, {int(users)} users, events "
          f"~{sum(sizes) // len(sizes)} B before messageId", file=sys.stderr)
    print("\n".join(paths))


def machine():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[3] + v[4], sum(v)  # idle + iowait, all


def hwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def sink_count(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5).read().decode()
    f = text.split()
    return dict(zip(f[0::2], (int(x) for x in f[1::2])))


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Died(Exception):
    pass


def check(procs):
    for name, pid in procs:
        if not alive(pid):
            raise Died(f"{name} (pid {pid}) died")


def sample(port, ferry, sink, t0):
    m = scrape(port)
    return {"t": time.monotonic() - t0, "m": m, "ferry": cpu_ticks(ferry),
            "sink": cpu_ticks(sink), "machine": machine()}


def slope(points):
    # Theil-Sen slope of (t, y): the median of the slopes between every two
    # points. Unlike a least-squares fit, one momentary spike of the backlog
    # (a destination a few hundred ms behind while the cores are busy) does
    # not move it.
    pairs = sorted((y2 - y1) / (t2 - t1) for i, (t1, y1) in enumerate(points)
                   for t2, y2 in points[i + 1:] if t2 > t1)
    if not pairs:
        return 0.0
    n = len(pairs)
    return pairs[n // 2] if n % 2 else (pairs[n // 2 - 1] + pairs[n // 2]) / 2


def parse_summary(text):
    line = [l for l in text.splitlines() if l.startswith("load_gen_summary ")]
    if not line:
        return None
    return {k: float(v) for k, v in (kv.split("=") for kv in line[-1].split()[1:])}


def window(a):
    # One rate: samples around a load_gen run, then one JSON line of results.
    rate, dur, sample_s = float(a["rate"]), float(a["duration"]), float(a["sample"])
    ferry, sink, port, sport = int(a["ferry_pid"]), int(a["sink_pid"]), a["port"], a["sink_port"]
    dests, bound = a["dests"].split(), float(a["bound"])
    procs = [("ferry", ferry), ("the webhook sink", sink)]
    every = min(sample_s, dur / 10)
    cmd = [a["load_bin"], "--url", f"http://127.0.0.1:{port}/v1/batch", "-c", a["conns"],
           "-z", f"{a['duration']}s", "-q", str(rate / 100), "-H", a["auth"]]
    for b in a["bodies"].split(","):
        cmd += ["--body", b]
    t0 = time.monotonic()
    s0 = sample(port, ferry, sink, t0)
    c0 = sink_count(sport)
    out = open(f"{a['work']}/load_gen-{int(rate)}.out", "w")
    lg = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    open(f"{a['work']}/load_gen.pid", "w").write(str(lg.pid))
    samples = [s0]
    try:
        k = 1
        while True:
            try:
                lg.wait(timeout=max(0.0, t0 + k * every - time.monotonic()))
                break
            except subprocess.TimeoutExpired:
                pass
            check(procs)
            samples.append(sample(port, ferry, sink, t0))
            k += 1
        check(procs)
        samples.append(sample(port, ferry, sink, t0))
    except Died as e:
        lg.kill()
        lg.wait()
        sys.exit(f"e2e_load: {e} during the load at {int(rate)} events/s")
    finally:
        os.unlink(f"{a['work']}/load_gen.pid")
        out.close()
    c1 = sink_count(sport)
    text = open(f"{a['work']}/load_gen-{int(rate)}.out").read()
    lgs = parse_summary(text)
    if lg.returncode != 0 or lgs is None:
        sys.exit(f"e2e_load: load_gen failed (exit status {lg.returncode}):\n{text}")
    s1 = samples[-1]
    secs = s1["t"] - s0["t"]
    accepted_events = lgs["ok"] * lgs["ids_per_request"]
    idle = (s1["machine"][0] - s0["machine"][0]) / max(1, s1["machine"][1] - s0["machine"][1])
    ferry_cpu = (s1["ferry"] - s0["ferry"]) / HZ
    res = {
        "rate": rate, "secs": secs, "load_secs": lgs["secs"],
        "accepted": accepted_events / lgs["secs"], "accepted_events": accepted_events,
        "sent": lgs["sent"], "ok": lgs["ok"], "other_status": lgs["other_status"],
        "errors": lgs["errors"], "p50_ms": lgs["p50_ms"], "p99_ms": lgs["p99_ms"],
        "p999_ms": lgs["p999_ms"], "stored": metric(s1["m"], "ferry_ingest_events_total")
                                            - metric(s0["m"], "ferry_ingest_events_total"),
        "ferry_cpu": ferry_cpu, "cpu_us_per_event": 1e6 * ferry_cpu / max(1, accepted_events),
        "sink_cpu": (s1["sink"] - s0["sink"]) / HZ, "idle": idle,
        "rss_mib": hwm_mib(ferry), "log_bytes": metric(s1["m"], "ferry_log_size_bytes"),
        "statuses": lgs, "dests": {}, "sink_events": c1["events"] - c0["events"],
        "sink_requests": c1["requests"] - c0["requests"],
    }
    text_statuses = re.findall(r"\[(\d{3})\] (\d+) responses", text)
    res["status_text"] = " ".join(f"{s}×{n}" for s, n in text_statuses if s != "200")
    errs = re.search(r"Error distribution:\n((?:  .*\n?)*)", text)
    res["error_text"] = errs.group(1).strip() if errs else ""
    for d in dests:
        def lag(s):
            return metric(s["m"], "ferry_delivery_lag_events", destination=d)
        delivered = (metric(s1["m"], "ferry_delivery_delivered_total", destination=d)
                     - metric(s0["m"], "ferry_delivery_delivered_total", destination=d))
        late = [(s["t"], lag(s)) for s in samples if s["t"] >= secs / 3 + s0["t"]]
        sl = slope(late if len(late) >= 2 else [(s["t"], lag(s)) for s in samples])
        growing = lag(s1) > bound and sl > 0.01 * res["accepted"]
        res["dests"][d] = {
            "delivered": delivered / secs, "delivered_events": delivered,
            "backlog_start": lag(s0), "backlog_end": lag(s1),
            "backlog_max": max(lag(s) for s in samples), "slope": sl,
            "verdict": "growing" if growing else "bounded",
            "retried": metric(s1["m"], "ferry_delivery_retried_total", destination=d)
                       - metric(s0["m"], "ferry_delivery_retried_total", destination=d),
            "dead": metric(s1["m"], "ferry_delivery_dead_lettered_total", destination=d)
                    - metric(s0["m"], "ferry_delivery_dead_lettered_total", destination=d),
            "samples": [(round(s["t"], 2), lag(s)) for s in samples],
        }
    print(json.dumps(res))
    w = res["dests"].get("webhook")
    note = ""
    if w is not None:
        note = (f"; sink received {res['sink_events']:.0f} events in {res['sink_requests']} requests "
                f"(ferry counted {w['delivered_events']:.0f} delivered)")
    print(f"rate {int(rate)}: accepted {res['accepted']:.0f} events/s, stored {res['stored']:.0f} events, "
          f"p99 {res['p99_ms']:.1f} ms, ferry {ferry_cpu:.1f} s CPU, peak RSS {res['rss_mib']:.0f} MiB, "
          f"log holds {res['log_bytes'] / 1e6:.0f} MB at the end"
          + "".join(f"; {d} delivered {v['delivered']:.0f}/s, backlog {v['backlog_end']:.0f} ({v['verdict']})"
                    for d, v in res["dests"].items()) + note, file=sys.stderr)


def table(a):
    rows = [json.loads(l) for l in open(a["results"]) if l.strip()]
    bound = float(a["bound"])
    print()
    print("| offered ev/s | accepted ev/s | non-200 | ingest p99 ms | ferry CPU s | CPU µs/event | idle % "
          "| destination | delivered ev/s | backlog start | backlog end (max) | slope ev/s | backlog | retried | dead letters |")
    print("|" + "---|" * 15)
    sustained, per_dest = None, {}
    for r in rows:
        first = True
        bad = r["other_status"] + r["errors"]
        for d, v in r["dests"].items():
            head = (f"| {r['rate']:,.0f} | {r['accepted']:,.0f} | {bad:.0f} | {r['p99_ms']:,.1f} "
                    f"| {r['ferry_cpu']:.1f} | {r['cpu_us_per_event']:.1f} | {100 * r['idle']:.0f} "
                    if first else "| | | | | | | ")
            print(head + f"| {d} | {v['delivered']:,.0f} | {v['backlog_start']:,.0f} "
                         f"| {v['backlog_end']:,.0f} ({v['backlog_max']:,.0f}) "
                         f"| {v['slope']:,.0f} | {v['verdict']} | {v['retried']:.0f} | {v['dead']:.0f} |")
            first = False
        if not r["dests"]:
            print(f"| {r['rate']:,.0f} | {r['accepted']:,.0f} | {bad:.0f} | {r['p99_ms']:,.1f} | {r['ferry_cpu']:.1f} "
                  f"| {r['cpu_us_per_event']:.1f} | {100 * r['idle']:.0f} | – | | | | | | | |")
        kept_up = bad == 0 and r["accepted"] >= 0.95 * r["rate"]
        if kept_up and all(v["verdict"] == "bounded" for v in r["dests"].values()):
            sustained = max(sustained or 0, r["rate"])
        for d, v in r["dests"].items():
            if kept_up and v["verdict"] == "bounded":
                per_dest[d] = max(per_dest.get(d, 0), r["rate"])
            else:
                per_dest.setdefault(d, None)
    print()
    for r in rows:
        if r["status_text"] or r["error_text"]:
            print(f"at {r['rate']:,.0f} events/s load_gen saw: {r['status_text']} {r['error_text']}".rstrip())
    print(f"backlog: 'growing' when it ends above {bound:,.0f} events and its slope (Theil-Sen, samples of "
          f"the last two thirds of the window) exceeds 1 % of the accepted rate; otherwise 'bounded'.")
    if not any(r["dests"] for r in rows):
        print("no destinations were configured (DESTS=none): ingest alone, nothing routed")
        return
    print("sustained routing rate = highest offered rate with every request answered 200, accepted >= 95 % "
          "of offered and every destination's backlog bounded: "
          + (f"{sustained:,.0f} events/s" if sustained else "none of the rates measured"))
    for d, v in per_dest.items():
        print(f"  {d} alone: " + (f"bounded up to {v:,.0f} events/s" if v else "bounded at none of the rates"))


def drain(a):
    # Polls until the destination has delivered or dead-lettered `events`;
    # prints one JSON line of results.
    port, ferry, sink, d = a["port"], int(a["ferry_pid"]), int(a["sink_pid"]), a["dest"]
    events, timeout, spawned = int(a["events"]), float(a["timeout"]), float(a["spawned"])
    procs = [("ferry", ferry), ("the webhook sink", sink)]
    c0 = json.loads(a["sink_before"])  # read before ferry started
    first = None
    while True:
        check(procs)
        try:
            m = scrape(port)
        except OSError:
            if first is None and time.time() - spawned < 60:
                time.sleep(0.05)
                continue
            raise
        now = time.time()
        done = (metric(m, "ferry_delivery_delivered_total", destination=d)
                + metric(m, "ferry_delivery_dead_lettered_total", destination=d))
        if first is None:
            first = (now, done, cpu_ticks(ferry), metric(m, "ferry_log_first_offset"),
                     metric(m, "ferry_log_end_offset"))
            if first[3] != 0 or first[4] != events:
                sys.exit(f"e2e_load: the log holds offsets {first[3]:.0f}..{first[4]:.0f}, not 0..{events}")
        if done >= events or now - first[0] > timeout:
            break
        time.sleep(0.1)
    cpu = (cpu_ticks(ferry) - first[2]) / HZ
    secs = now - first[0]
    time.sleep(0.3)  # the lag gauge is refreshed every 100 ms
    m = scrape(port)
    c1 = sink_count(a["sink_port"])
    res = {"dest": d, "settings": a["settings"], "events": events, "done": done,
           "finished": done >= events, "secs": secs, "rate": (done - first[1]) / secs,
           "from_spawn_secs": now - spawned, "at_first_answer": first[1],
           "ferry_cpu": cpu, "cpu_us_per_event": 1e6 * cpu / max(1, done - first[1]),
           "lag_end": metric(m, "ferry_delivery_lag_events", destination=d),
           "retried": metric(m, "ferry_delivery_retried_total", destination=d),
           "dead": metric(m, "ferry_delivery_dead_lettered_total", destination=d),
           "sink_events": c1["events"] - c0["events"], "sink_requests": c1["requests"] - c0["requests"]}
    print(json.dumps(res))
    print(f"drain {d}: {done:.0f} of {events} events in {secs:.1f} s ({res['rate']:,.0f} events/s; "
          f"{first[1]:.0f} delivered before ferry's first /metrics answer, {first[0] - spawned:.2f} s after "
          f"its start)" + ("" if res["finished"] else f", NOT finished after {timeout:.0f} s"), file=sys.stderr)


def drain_table(a):
    rows = [json.loads(l) for l in open(a["results"]) if l.strip()]
    print()
    print("| destination | settings | backlog | delivered | seconds | events/s | ferry CPU µs/event "
          "| sink events (requests) | retried | dead letters |")
    print("|" + "---|" * 10)
    for r in rows:
        sink = f"{r['sink_events']:,} ({r['sink_requests']:,})" if r["dest"].startswith("drain-webhook") else "–"
        secs = f"{r['secs']:,.1f}" + ("" if r["finished"] else " (timed out)")
        print(f"| {r['dest']} | {r['settings']} | {r['events']:,} | {r['done']:,.0f} | {secs} | {r['rate']:,.0f} "
              f"| {r['cpu_us_per_event']:.1f} | {sink} | {r['retried']:.0f} | {r['dead']:.0f} |")
    print("(seconds: from ferry's first /metrics answer after its start, polled every 0.1 s, until the "
          "destination had delivered the whole backlog; events/s counts the events delivered in that time)")


if __name__ == "__main__":
    args = dict(kv.split("=", 1) for kv in sys.argv[2:])
    {"bodies": lambda: bodies(args["work"], args["users"]), "window": lambda: window(args),
     "table": lambda: table(args), "drain": lambda: drain(args),
     "drain_table": lambda: drain_table(args)}[sys.argv[1]]()
PY

# --- processes -----------------------------------------------------------
tail_log() { # the last lines of a log, without colours
  sed 's/\x1b\[[0-9;]*m//g' "$1" | tail -n "${2:-20}" >&2
}
ferry_died() { # says ferry died, with its log; exits
  local rc=0
  wait "$FERRY_PID" 2>/dev/null || rc=$?
  echo "e2e_load: ferry (pid $FERRY_PID) died with exit status $rc; its last log lines ($FERRY_ERR):" >&2
  tail_log "$FERRY_ERR"
  FERRY_PID=""
  exit 1
}
wait_up() { # url pid name log: until url answers, or the process is gone, or 60 s
  local i
  for i in $(seq 600); do
    if curl -s -o /dev/null --max-time 2 "$1"; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then
      echo "e2e_load: $3 exited during start-up; its output ($4):" >&2
      tail_log "$4"
      exit 1
    fi
    sleep 0.1
  done
  die "$3 did not answer $1 within 60 s"
}
start_ferry() { # config label
  FERRY_ERR="$WORK/ferry-$2.err"
  SPAWNED="$(date +%s.%N)"
  "$FERRY_BIN" serve --config "$1" >"$WORK/ferry-$2.out" 2>"$FERRY_ERR" &
  FERRY_PID=$!
  wait_up "http://127.0.0.1:$FERRY_PORT/health" "$FERRY_PID" ferry "$FERRY_ERR"
}
stop_ferry() { # SIGTERM, up to 60 s for the shutdown; a non-zero exit is an error
  local i rc=0
  kill -0 "$FERRY_PID" 2>/dev/null || ferry_died
  kill -TERM "$FERRY_PID"
  for i in $(seq 600); do
    kill -0 "$FERRY_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$FERRY_PID" 2>/dev/null; then
    kill -KILL "$FERRY_PID" 2>/dev/null || true
    wait "$FERRY_PID" 2>/dev/null || true
    echo "e2e_load: ferry did not stop within 60 s of SIGTERM (killed); its last log lines:" >&2
    tail_log "$FERRY_ERR"
    FERRY_PID=""
    exit 1
  fi
  wait "$FERRY_PID" || rc=$?
  if [ "$rc" != 0 ]; then
    echo "e2e_load: ferry exited with status $rc after SIGTERM; its last log lines:" >&2
    tail_log "$FERRY_ERR"
    FERRY_PID=""
    exit 1
  fi
  FERRY_PID=""
}
# Warnings this script causes on purpose: the drain's fill runs without
# destinations, and each drain configures only its own destination.
EXPECTED_WARNINGS='no destinations configured|is no longer configured: its cursor'
warnings() { # ferry's WARN and ERROR lines, but the expected ones, counted by message
  local lines
  lines="$(sed 's/\x1b\[[0-9;]*m//g' "$FERRY_ERR" | grep -E ' (WARN|ERROR) ' | grep -vE "$EXPECTED_WARNINGS" || true)"
  if [ -n "$lines" ]; then
    echo "ferry logged $(wc -l <<<"$lines") WARN/ERROR lines ($1); the most frequent, digits as N:"
    sed -E 's/^[^ ]+ +//; s/[0-9]+/N/g' <<<"$lines" | sort | uniq -c | sort -rn | head -n 5
  fi
}
py() { python3 "$WORK/e2e.py" "$@"; }

FERRY_SINK_LISTEN="127.0.0.1:$SINK_PORT" "$SINK_BIN" >"$WORK/sink.out" 2>&1 &
SINK_PID=$!
wait_up "http://127.0.0.1:$SINK_PORT/count" "$SINK_PID" "the webhook sink" "$WORK/sink.out"
BODIES="$(py bodies "work=$WORK" "users=$USERS" | paste -sd, -)"
AUTH="Authorization: Basic $(printf '%s:' "$KEY" | base64)"

base_config() { # data-dir: the configuration every run shares
  cat <<TOML
listen = "127.0.0.1:$FERRY_PORT"
data_dir = "$1"
[[sources]]
name = "load"
write_key = "$KEY"
TOML
}
webhook_dest() { # name batch_size(or empty) extra
  printf '[[destinations]]\nname = "%s"\ntype = "webhook"\nurl = "http://127.0.0.1:%s/ferry"\n' "$1" "$SINK_PORT"
  if [ -n "$2" ]; then printf 'batch_size = %s\n' "$2"; fi
  if [ -n "$3" ]; then printf '%s\n' "$3"; fi
}
file_dest() { # name path extra
  printf '[[destinations]]\nname = "%s"\ntype = "file"\npath = "%s"\n' "$1" "$2"
  if [ -n "$3" ]; then printf '%s\n' "$3"; fi
}
settings_line() {
  echo "settings: MODE=$MODE $* USERS=$USERS, $("$FERRY_BIN" --version 2>/dev/null || echo ferry) ($FERRY_BIN), $(nproc) cores shared by ferry, load_gen and the webhook sink"
}

if [ "$MODE" = rates ]; then
  echo "e2e_load: rates $RATES events/s, $DURATION_S s each, fresh data directory per rate, destinations: ${DESTS:-none}" >&2
  for rate in $RATES; do
    dir="$WORK/rate-$rate"
    mkdir -p "$dir"
    {
      base_config "$dir/data"
      for d in $DESTS; do
        case "$d" in
          webhook) webhook_dest webhook "$WEBHOOK_BATCH" "$WEBHOOK_OPTS" ;;
          file) file_dest file "$dir/file-out/events.jsonl" "$FILE_OPTS" ;;
        esac
      done
    } >"$dir/ferry.toml"
    start_ferry "$dir/ferry.toml" "rate-$rate"
    python3 "$WORK/e2e.py" window "work=$WORK" "rate=$rate" "duration=$DURATION_S" "sample=$SAMPLE" "conns=$CONNS" \
      "ferry_pid=$FERRY_PID" "sink_pid=$SINK_PID" "port=$FERRY_PORT" "sink_port=$SINK_PORT" \
      "dests=$DESTS" "bound=$BOUND" "load_bin=$LOAD_BIN" "auth=$AUTH" "bodies=$BODIES" \
      >>"$WORK/results.jsonl" &
    PY_PID=$!
    py_rc=0
    wait "$PY_PID" || py_rc=$?
    PY_PID=""
    if [ "$py_rc" != 0 ]; then
      kill -0 "$FERRY_PID" 2>/dev/null || ferry_died
      die "the run at $rate events/s failed (above)"
    fi
    stop_ferry
    warnings "at $rate events/s" | tee -a "$WORK/warnings.txt" >&2
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$dir"; fi
  done
  py table "results=$WORK/results.jsonl" "bound=$BOUND"
  cat "$WORK/warnings.txt"
  settings_line "RATES=\"$RATES\" DURATION=${DURATION_S}s CONNS=$CONNS SAMPLE=$SAMPLE DESTS=\"${DESTS:-none}\" WEBHOOK_BATCH=$WEBHOOK_BATCH WEBHOOK_OPTS='$WEBHOOK_OPTS' FILE_OPTS='$FILE_OPTS' BOUND=$BOUND (fresh data directory per rate)"
  exit 0
fi

# --- MODE=drain ------------------------------------------------------------
dir="$WORK/drain"
mkdir -p "$dir"
{ base_config "$dir/data"; printf '[log]\nmin_retention = "24h"\n'; } >"$dir/fill.toml"
echo "e2e_load: filling a backlog of $EVENTS events (no destinations configured)" >&2
start_ferry "$dir/fill.toml" fill
fill_cmd=("$LOAD_BIN" --url "http://127.0.0.1:$FERRY_PORT/v1/batch" -c "$FILL_CONNS" -n "$requests" -H "$AUTH")
IFS=, read -ra body_files <<<"$BODIES"
for b in "${body_files[@]}"; do fill_cmd+=(--body "$b"); done
"${fill_cmd[@]}" >"$WORK/fill.out" 2>&1 &
echo $! >"$WORK/load_gen.pid"
fill_rc=0
wait "$(cat "$WORK/load_gen.pid")" || fill_rc=$?
rm -f "$WORK/load_gen.pid"
kill -0 "$FERRY_PID" 2>/dev/null || ferry_died
summary="$(grep '^load_gen_summary ' "$WORK/fill.out" || true)"
if [ "$fill_rc" != 0 ] || [[ "$summary" != *" ok=$requests "* ]]; then
  cat "$WORK/fill.out" >&2
  echo "e2e_load: filling the backlog failed: not every one of $requests requests was answered 200 (above); ferry's last log lines:" >&2
  tail_log "$FERRY_ERR"
  exit 1
fi
log_bytes="$(curl -s "http://127.0.0.1:$FERRY_PORT/metrics" | awk '$1 == "ferry_log_size_bytes" {print $2}')"
echo "filled: $summary; log $log_bytes bytes ($((log_bytes / EVENTS)) B per event)" >&2
stop_ferry
warnings "while filling" | tee -a "$WORK/warnings.txt" >&2
for d in $DRAIN_DESTS; do
  case "$d" in
    file) dest="$(file_dest drain-file "$dir/file-out/events.jsonl" "start = \"earliest\"")"
      settings="defaults (name, path)" ;;
    webhook) dest="$(webhook_dest drain-webhook "" "start = \"earliest\"")"
      settings="defaults (name, url)" ;;
    webhook-batch) dest="$(webhook_dest drain-webhook-batch "$WEBHOOK_BATCH" "start = \"earliest\"${WEBHOOK_OPTS:+
$WEBHOOK_OPTS}")"
      settings="batch_size = $WEBHOOK_BATCH${WEBHOOK_OPTS:+, $WEBHOOK_OPTS}" ;;
  esac
  { base_config "$dir/data"; printf '[log]\nmin_retention = "24h"\n'; echo "$dest"; } >"$dir/$d.toml"
  echo "e2e_load: draining $EVENTS events to $d" >&2
  sink_before="$(python3 -c 'import json, sys, urllib.request
f = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/count", timeout=5).read().decode().split()
print(json.dumps(dict(zip(f[0::2], map(int, f[1::2])))))' "$SINK_PORT")"
  start_ferry "$dir/$d.toml" "drain-$d"
  python3 "$WORK/e2e.py" drain "port=$FERRY_PORT" "ferry_pid=$FERRY_PID" "sink_pid=$SINK_PID" "sink_port=$SINK_PORT" \
    "dest=drain-$d" "events=$EVENTS" "timeout=$DRAIN_TIMEOUT_S" "spawned=$SPAWNED" \
    "settings=$settings" "sink_before=$sink_before" >>"$WORK/drain.jsonl" &
  PY_PID=$!
  py_rc=0
  wait "$PY_PID" || py_rc=$?
  PY_PID=""
  if [ "$py_rc" != 0 ]; then
    kill -0 "$FERRY_PID" 2>/dev/null || ferry_died
    die "the drain of $d failed (above)"
  fi
  stop_ferry
  warnings "draining $d" | tee -a "$WORK/warnings.txt" >&2
  rm -rf "$dir/file-out"
done
py drain_table "results=$WORK/drain.jsonl"
cat "$WORK/warnings.txt"
settings_line "EVENTS=$EVENTS DRAIN_DESTS=\"$DRAIN_DESTS\" WEBHOOK_BATCH=$WEBHOOK_BATCH WEBHOOK_OPTS='$WEBHOOK_OPTS' DRAIN_TIMEOUT=${DRAIN_TIMEOUT_S}s FILL_CONNS=$FILL_CONNS"
