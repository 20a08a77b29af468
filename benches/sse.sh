#!/usr/bin/env bash
# SSE fan-out, durable ingest and memory per stream (esprit-edge and nginx).
# Usage: benches/sse.sh [sizes=1000,5000,10000] [rate=10] [secs=10]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup --bench
export PATH="$HOME/.local/bin:$PATH"
cargo build --release --locked -q --bin esprit-edge
exec cargo bench --locked -q --bench sse_fanout -- "$@"
