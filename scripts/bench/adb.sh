#!/usr/bin/env bash
# devbatch against the adb CLI on simulated Android devices behind the real Debian adb server:
#  1. `shell true` on 50 devices: `devbatch run shell` (concurrency 10) vs
#     `xargs -P 10 adb -s SERIAL shell true`;
#  2. push of a 50 MB file to 10 devices: `devbatch run push` vs 10 parallel `adb push`.
# Medians of alternating runs, with ratios.
#
# Usage: scripts/bench/adb.sh            (as root, or with sudo for apt-get)
# Settings: DEVICES=50 PUSH_DEVICES=10 PUSH_MB=50 RUNS=5
set -euo pipefail
source "$(dirname "$0")/common.sh"
DEVICES="${DEVICES:-50}"
PUSH_DEVICES="${PUSH_DEVICES:-10}"
PUSH_MB="${PUSH_MB:-50}"
RUNS="${RUNS:-5}"

ensure_packages adb:/usr/bin/adb
build_devbatch
(cd "$BENCH_ROOT" && cargo build --release --quiet -p adbd-sim --bin adbd-sim)
SIM="$BENCH_ROOT/target/release/adbd-sim"

WORK=$(mktemp -d /tmp/devbatch-bench-adb.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# A private adb server, its keys and state in $WORK, never the user's.
export HOME="$WORK" ADB_MDNS=0
unset ANDROID_SERIAL ADB_VENDOR_KEYS
PORT=$(free_port)
adb -P "$PORT" nodaemon server > "$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do adb -P "$PORT" version >/dev/null 2>&1 && break; sleep 0.1; done

"$SIM" --devices "$DEVICES" --connect-to-adb "$PORT" > "$WORK/sims.txt" 2> "$WORK/sims.log" &
PIDS+=($!)
for _ in $(seq 600); do
    [ "$(adb -P "$PORT" devices | grep -c $'\tdevice$')" -ge "$DEVICES" ] && break
    sleep 0.1
done
adb -P "$PORT" devices | awk -F'\t' '$2 == "device" {print $1}' > "$WORK/serials"
[ "$(wc -l < "$WORK/serials")" -eq "$DEVICES" ] || { echo "bench: only $(wc -l < "$WORK/serials") of $DEVICES devices came up" >&2; exit 1; }
head -n "$PUSH_DEVICES" "$WORK/serials" > "$WORK/push_serials"

cat > "$WORK/pool.toml" <<POOL
[[devices]]
backend = "adb"
server = "127.0.0.1:$PORT"
discover = true
POOL
PUSH_IDS=$(paste -sd, "$WORK/push_serials")
head -c "$((PUSH_MB * 1024 * 1024))" /dev/urandom > "$WORK/payload.bin"

echo "# ADB: devbatch vs the adb CLI, $DEVICES simulated devices ($(nproc) cores, runs=$RUNS)"
compare --runs "$RUNS" --title "\`shell true\` on $DEVICES devices, 10 at once" \
    "devbatch=$DEVBATCH --pool $WORK/pool.toml run shell --param cmd=true -j 10 -q -o json" \
    "xargs adb=xargs -P 10 -I{} adb -P $PORT -s {} shell true < $WORK/serials"

compare --runs "$RUNS" --title "push of $PUSH_MB MB to $PUSH_DEVICES devices at once ($((PUSH_MB * PUSH_DEVICES)) MB in all; throughput ratio = inverse of the wall ratio)" \
    "devbatch=$DEVBATCH --pool $WORK/pool.toml run push --param local=$WORK/payload.bin --param remote=/data/local/tmp/payload.bin -d $PUSH_IDS -j $PUSH_DEVICES -q -o json" \
    "adb push=xargs -P $PUSH_DEVICES -I{} adb -P $PORT -s {} push $WORK/payload.bin /data/local/tmp/payload.bin < $WORK/push_serials"
