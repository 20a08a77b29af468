#!/usr/bin/env bash
# Slow clients side by side: slowhttptest in slow-header (slowloris) and
# slow-body (R-U-Dead-Yet) modes against esprit-edge on its shipped config
# and against nginx as an operator configures it (Debian's defaults:
# worker_connections 768, client_header_timeout and client_body_timeout 60 s),
# both in front of the same 1 KiB upstream. The attack comes from 127.0.0.1;
# a legitimate client probes from 127.0.0.2 once a second. Prints, for each
# server and mode, how many probes were served and what slowhttptest saw.
#
# Usage: benches/slow_clients.sh [seconds=40] [connections=2000]
# Needs: scripts/setup --bench (nginx-light, slowhttptest). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-40}
CONNS=${2:-2000}
ulimit -n 20000

scripts/setup --bench
cargo build --release --locked -q --bin esprit-edge

. benches/lib.sh
bench_init esprit-slow
start_upstream_1k
EDGE=$(free_port); NGX=$(free_port)
mkdir -p "$work/ngx" "$work/data"
cat > "$work/ngx/nginx.conf" <<CONF
worker_processes 1;
pid $work/ngx/nginx.pid;
error_log $work/ngx/error.log warn;
events { worker_connections 768; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
nginx -p "$work/ngx" -c "$work/ngx/nginx.conf" -g 'daemon off;' & pids+=($!)
ESPRIT_LISTEN="127.0.0.1:$EDGE" ESPRIT_UPSTREAM_SKYOFFICE="127.0.0.1:$UP" ESPRIT_DATA_DIR="$work/data" \
  target/release/esprit-edge --config conf/esprit-edge.toml > "$work/edge.log" 2>&1 & pids+=($!)
for port in $NGX $EDGE; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:$port/" >/dev/null || { echo "port $port never answered" >&2; cat "$work"/ngx/error.log "$work/edge.log" >&2; exit 1; }
done

attack() { # name port mode(H|B) -> one result line
  local name=$1 port=$2 mode=$3 extra=()
  [ "$mode" = B ] && extra=(-B -s 8192) || extra=(-H)
  slowhttptest "${extra[@]}" -c "$CONNS" -r 200 -i 10 -x 24 -p 3 -l "$SECS" -g -o "$work/$name-$mode" \
    -u "http://127.0.0.1:$port/" > "$work/$name-$mode.out" 2>&1 &
  local st=$!
  local ok=0 tries=0
  sleep 5   # let the attack build up first
  while kill -0 "$st" 2>/dev/null; do
    tries=$((tries + 1))
    curl -fs -m 3 --interface 127.0.0.2 -o /dev/null "http://127.0.0.1:$port/" && ok=$((ok + 1))
    sleep 1
  done
  wait "$st" || true
  # The CSV: seconds,closed,pending,connected,service available (0/1).
  local peak unavailable
  peak=$(awk -F, 'NR>1 && $4+0 > m {m=$4+0} END {print m+0}' "$work/$name-$mode.csv")
  unavailable=$(awk -F, 'NR>1 && $5+0 == 0 {n++} END {print n+0}' "$work/$name-$mode.csv")
  printf '%-6s %-12s %-18s %8s %16s\n' "$name" "$([ "$mode" = H ] && echo slow-header || echo slow-body)" \
    "$ok/$tries" "$peak" "$unavailable"
}

echo "# slowhttptest -c $CONNS -r 200 -i 10 -l ${SECS}s from 127.0.0.1; probe from 127.0.0.2 every second"
printf '%-6s %-12s %-18s %8s %16s\n' server mode probes-served held-peak probe-down-secs
for mode in H B; do
  attack edge "$EDGE" "$mode"
  attack nginx "$NGX" "$mode"
done
echo "(held-peak: the most attack connections slowhttptest saw open; probe-down-secs: seconds its own probe, from the attacker's address, was refused or timed out)"
