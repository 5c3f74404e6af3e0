# Shared by the benchmark scripts: installing what they need, building devbatch, free ports.
# Sourced, not run.

BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH_CACHE="${BENCH_CACHE:-$BENCH_ROOT/target/bench-tools}"

# ensure_packages PACKAGE:COMMAND... installs each Debian package whose command is missing.
ensure_packages() {
    local missing=() spec
    for spec in "$@"; do
        command -v "${spec#*:}" >/dev/null 2>&1 || [ -x "${spec#*:}" ] || missing+=("${spec%%:*}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "bench: installing ${missing[*]}" >&2
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# build_devbatch: a release build of the CLI; sets DEVBATCH.
build_devbatch() {
    (cd "$BENCH_ROOT" && cargo build --release --quiet --bin devbatch)
    DEVBATCH="$BENCH_ROOT/target/release/devbatch"
}

# free_port: a TCP port free on 127.0.0.1 right now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

compare() {
    python3 "$BENCH_ROOT/scripts/bench/compare.py" "$@"
}
