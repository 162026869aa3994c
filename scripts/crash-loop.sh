#!/bin/sh
# Long crash-kill loop: SIGKILL the real `ferry serve` N times (default 100)
# under load and check that nothing acknowledged is lost and per-user order
# holds (tests/crash_kill_loop.rs). Usage:
#   scripts/crash-loop.sh [CYCLES] [SEED]
# A failing run prints its seed; rerun it with the same CYCLES and SEED.
set -eu
cd "$(dirname "$0")/.."
CYCLES="${1:-100}"
SEED="${2:-$(date +%s)}"
echo "crash-loop: $CYCLES cycles, seed $SEED"
FERRY_CRASH_CYCLES="$CYCLES" FERRY_CRASH_SEED="$SEED" \
    cargo test --release --test crash_kill_loop -- --nocapture
