#!/usr/bin/env bash
# Creates a Python venv at $1 (default: target/sdk-venv) holding the official
# segment-analytics-python SDK from PyPI, for tests/sdk_compat.rs.
# Needs python3 with the venv module (Debian/Ubuntu: apt-get install python3-venv).
set -euo pipefail
VENV="${1:-target/sdk-venv}"
PACKAGE="segment-analytics-python==2.4.0"
MARKER="$VENV/.ferry-sdk-installed"
if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$PACKAGE" ]]; then
  exit 0
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$PACKAGE"
echo "$PACKAGE" > "$MARKER"
