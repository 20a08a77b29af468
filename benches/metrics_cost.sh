#!/usr/bin/env bash
# What issue 11 costs the proxy path: requests/s of the edge as it is (metrics
# recorded on every request, request ids, the compression module installed)
# against the same edge built from BASE, the commit before metrics existed,
# alternated in one run on the same upstream and config (1 KiB responses,
# keep-alive, wrk). Metrics are always recorded (the admin listener only
# serves them), so "without metrics" is the build without them; the ratio
# is an upper bound on the metrics' own cost, since request ids and the
# compression module landed after BASE too.
#
# Usage: benches/metrics_cost.sh [base=7bf3d7f^] [rounds=5] [seconds=10] [connections=50]
# The base is built in its own worktree and target dir (target/metrics-base),
# a full release build the first time (~5 min here).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:-7bf3d7f^}
ROUNDS=${2:-5}
SECS=${3:-10}
CONNS=${4:-50}
THREADS=${BENCH_THREADS:-1}

scripts/setup --bench
export PATH="$HOME/.local/bin:$PATH"
cargo build --release --locked -q --bin esprit-edge
base_dir=target/metrics-base
rev=$(git rev-parse --short "$BASE")
if [ ! -x "$base_dir/esprit-edge-$rev" ]; then
  rm -rf "$base_dir/src"; git worktree prune
  git worktree add --detach "$base_dir/src" "$rev" >/dev/null
  (cd "$base_dir/src" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --locked -q --bin esprit-edge)
  cp "$base_dir/target/release/esprit-edge" "$base_dir/esprit-edge-$rev"
  git worktree remove --force "$base_dir/src"
fi

. benches/lib.sh
bench_init esprit-metrics
start_upstream_1k
NOW=$(free_port); OLD=$(free_port)
config() { # port name
  cat <<CONF
[server]
listen = "127.0.0.1:$1"
threads = $THREADS
upgrade_sock = "$work/$2-upgrade.sock"
pid_file = "$work/$2.pid"
[upstreams.app]
address = "127.0.0.1:$UP"
[[routes]]
prefix = "/"
upstream = "app"
csp = "default-src 'self'"
CONF
}
config "$NOW" now > "$work/now.toml"; config "$OLD" old > "$work/old.toml"
target/release/esprit-edge --config "$work/now.toml" > "$work/now.log" 2>&1 & pids+=($!)
"$base_dir/esprit-edge-$rev" --config "$work/old.toml" > "$work/old.log" 2>&1 & pids+=($!)
for port in $NOW $OLD; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/bench" >/dev/null && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:$port/bench" >/dev/null || { echo "port $port never answered" >&2; cat "$work"/*.log >&2; exit 1; }
done

rps() { wrk -t1 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$1/bench" | awk '/Requests\/sec/ {print $2}'; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo "# edge now ($(git rev-parse --short HEAD)) vs edge at $rev (no metrics): wrk -t1 -c$CONNS -d${SECS}s, $ROUNDS alternated rounds, $THREADS thread(s)"
: > "$work/ratios"; : > "$work/now.res"; : > "$work/old.res"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then a=$(rps "$NOW"); b=$(rps "$OLD"); else b=$(rps "$OLD"); a=$(rps "$NOW"); fi
  echo "$a" >> "$work/now.res"; echo "$b" >> "$work/old.res"
  awk -v a="$a" -v b="$b" 'BEGIN {printf "%.4f\n", a/b}' >> "$work/ratios"
  printf 'round %s: now %s req/s, without metrics %s req/s\n' "$r" "$a" "$b"
done
printf 'median: now %s, without metrics %s; ratio now/without: %s (median of per-round ratios)\n' \
  "$(median < "$work/now.res")" "$(median < "$work/old.res")" "$(median < "$work/ratios")"
