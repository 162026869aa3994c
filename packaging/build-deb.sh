#!/usr/bin/env bash
# Builds the Debian package target/debian/ferry_<version>-1_<arch>.deb: the
# release binary, /etc/ferry/ferry.toml (a conffile), the systemd unit, the
# man page and shell completions (generated from the binary's own command
# line), and the docs. Needs cargo-deb (`cargo install cargo-deb`).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "build-deb.sh: cargo-deb is missing: cargo install cargo-deb" >&2; exit 1; }
cargo build --release --bin ferry
assets=target/deb-assets
mkdir -p "$assets"
bin=target/release/ferry
"$bin" man >"$assets/ferry.1"
"$bin" completions bash >"$assets/ferry.bash"
"$bin" completions zsh >"$assets/_ferry"
"$bin" completions fish >"$assets/ferry.fish"
cargo deb --no-build
