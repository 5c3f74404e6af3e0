#!/usr/bin/env bash
# Runs every test of the workspace on this machine, the same way CI does.
#
# It first installs what the tests talk to (the Debian `adb` server, OpenSSH's `sshd` and
# client tools) when they are missing, with apt-get as root (or through sudo). The tests start
# their own private servers on loopback: an adb server on a free port with simulated devices
# connected to it, and sshd instances with their own keys and config. Nothing is skipped for a
# missing server: such a test fails and says what to install. (The only tests not run are the
# two benchmarks marked #[ignore]; scripts/bench/ runs them.)
#
# Usage: scripts/test.sh [extra arguments for `cargo nextest run`]
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/adb ] || missing+=(adb)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
if [ ${#missing[@]} -gt 0 ]; then
    echo "test.sh: installing ${missing[*]}" >&2
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# sshd refuses to start without its privilege-separation directory.
[ -d /run/sshd ] || { [ "$(id -u)" -eq 0 ] && mkdir -p /run/sshd; } || sudo mkdir -p /run/sshd


# The plugin libraries the tests load (the tests build them too; building them first keeps the
# libraries stable while the tests run in parallel).
cargo build --quiet --lib --examples -p devbatch-plugin-disk-usage -p devbatch-plugin-dir -p devbatch-plugin-fixtures

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --profile ci "$@"
else
    echo "test.sh: cargo-nextest not found, using cargo test" >&2
    cargo test --workspace "$@"
fi
cargo test --workspace --doc

# The examples are part of the promise: each must run to completion.
for example in examples/*.rs; do
    name=$(basename "$example" .rs)
    echo "test.sh: cargo run --example $name" >&2
    cargo run --quiet --example "$name" >/dev/null
done
echo "test.sh: all tests passed" >&2
