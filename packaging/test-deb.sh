#!/usr/bin/env bash
# Installs the Debian package on this machine and checks it (as root; it
# changes the system: installs ferry, adds the ferry user, and removes both
# at the end, with the data directory it made):
#   - dpkg -i installs it; `ferry config check /etc/ferry/ferry.toml` passes;
#   - systemd-analyze verify accepts the unit;
#   - the installed binary, run as the ferry user with the unit's command
#     line, serves on 127.0.0.1 and stores an event;
#   - dpkg -r keeps /var/lib/ferry and what it holds.
# systemd cannot run as PID 1 in this kind of container, so the unit itself is
# verified, not started; its command line is run by hand instead.
#   packaging/build-deb.sh && packaging/test-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls -t target/debian/ferry_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || { echo "test-deb.sh: no package: run packaging/build-deb.sh first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "test-deb.sh: needs root (dpkg -i)" >&2; exit 1; }
if dpkg -s ferry >/dev/null 2>&1 || [ -e /var/lib/ferry ]; then
  echo "test-deb.sh: ferry is already installed or /var/lib/ferry exists; remove them first" >&2
  exit 1
fi
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  dpkg --purge ferry >/dev/null 2>&1 || true
  userdel ferry 2>/dev/null || true
  rm -rf /var/lib/ferry /etc/ferry
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

dpkg -i "$deb" >/dev/null
ok "dpkg -i $(basename "$deb")"
getent passwd ferry >/dev/null || fail "no ferry user"
[ "$(stat -c %U:%G:%a /var/lib/ferry)" = ferry:ferry:750 ] || fail "/var/lib/ferry is $(stat -c %U:%G:%a /var/lib/ferry)"
[ "$(stat -c %U:%G:%a /etc/ferry/ferry.toml)" = root:ferry:640 ] || fail "/etc/ferry/ferry.toml is $(stat -c %U:%G:%a /etc/ferry/ferry.toml)"
grep -qx /etc/ferry/ferry.toml /var/lib/dpkg/info/ferry.conffiles || fail "ferry.toml is not a conffile"
ok "ferry user, /var/lib/ferry ferry:ferry 750, /etc/ferry/ferry.toml root:ferry 640 (conffile)"
ferry --version | grep -q "commit" || fail "ferry --version names no commit: $(ferry --version)"
ok "$(ferry --version)"
[ -s /usr/share/man/man1/ferry.1.gz ] && [ -s /usr/share/bash-completion/completions/ferry ] || fail "man page or completions missing"
ok "man page and completions installed"
runuser -u ferry -- ferry config check /etc/ferry/ferry.toml >/dev/null || fail "ferry config check"
ok "ferry config check /etc/ferry/ferry.toml"
unit=/usr/lib/systemd/system/ferry.service
systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
ok "systemd-analyze verify $unit"

# The unit's ExecStart, as the unit's user.
cmd=$(sed -n 's/^ExecStart=//p' "$unit")
runuser -u ferry -- $cmd >/tmp/ferry-deb-test.out 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  grep -q "ferry listening" /tmp/ferry-deb-test.out 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat /tmp/ferry-deb-test.out; fail "ferry serve stopped"; }
  sleep 0.1
done
grep -q "ferry listening on http://127.0.0.1:8080" /tmp/ferry-deb-test.out || fail "not listening: $(cat /tmp/ferry-deb-test.out)"
key=$(cat /var/lib/ferry/dev-write-key)
answer=$(curl -s -u "$key:" -H 'content-type: application/json' \
  -d '{"userId":"u1","event":"Package Installed","messageId":"deb-test-1"}' http://127.0.0.1:8080/v1/track)
[ "$answer" = '{"count":1,"success":true}' ] || fail "ingest answered $answer"
ferry log dump --data-dir /var/lib/ferry | grep -q '"messageId":"deb-test-1"' || fail "the event is not in the log"
ok "served as the ferry user with the unit's command line and stored an event"
[ "$(stat -c %U /var/lib/ferry/log)" = ferry ] || fail "the log is not the ferry user's"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

dpkg -r ferry >/dev/null
[ -d /var/lib/ferry/log ] || fail "dpkg -r removed the data directory"
ferry_log=$(ls /var/lib/ferry/log | head -1)
[ -n "$ferry_log" ] || fail "the log is empty after dpkg -r"
ok "dpkg -r keeps /var/lib/ferry"
echo "all package checks passed"
