#!/usr/bin/env bash
# Engine scale: 1,000 / 10,000 / 100,000 mock devices, no-op and 1 ms operations, concurrency
# 10 and 1,000, outcomes collected or streamed as JSON lines: wall time, time per
# device-operation and peak RSS, each row in its own process (median of 3).
#
# Usage: scripts/bench/engine.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "# Engine scale ($(nproc) cores)"
cargo bench --quiet -p devbatch-core --bench engine
