#!/usr/bin/env bash
# Side-by-side proxy benchmark: esprit-edge and nginx (Debian nginx-light) in
# front of the same upstream, alternated in one run, so the ratio survives a
# noisy shared machine. Small (1 KiB) responses over keep-alive, measured with wrk.
#
# Usage: benches/proxy.sh [rounds=5] [seconds=10] [connections=50]
# STORAGE=redis adds the gated edge with its sessions in a throwaway
# redis-server ([storage]), so the session check's cost on Redis shows
# beside SQLite's.
# Needs: scripts/setup --bench (nginx-light, wrk). Everything runs on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECS=${2:-10}
CONNS=${3:-50}
THREADS=${BENCH_THREADS:-1}   # worker threads for each proxy (nginx worker_processes)

scripts/setup --bench
export PATH="$HOME/.local/bin:$PATH"
cargo build --release --locked -q --bin esprit-edge --example bare_proxy

. benches/lib.sh
bench_init esprit-bench
start_upstream_1k
NGX=$(free_port); EDGE=$(free_port); BARE=$(free_port); GATE=$(free_port)
mkdir -p "$work/ngx"

# nginx as the proxy: the configuration an operator would write (keep-alive upstream, access log on).
cat > "$work/ngx/nginx.conf" <<CONF
worker_processes $THREADS;
pid $work/ngx/nginx.pid;
error_log $work/ngx/error.log warn;
events { worker_connections 4096; }
http {
  access_log $work/ngx/access.log;
  keepalive_requests 100000;
  upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      add_header X-Content-Type-Options nosniff;
      add_header X-Frame-Options SAMEORIGIN;
    }
  }
}
CONF
nginx -p "$work/ngx" -c "$work/ngx/nginx.conf" -g 'daemon off;' & pids+=($!)

# esprit-edge with its whole filter chain on (normalisation, routing, header
# policy, security headers, JSON access log to a file).
cat > "$work/edge.toml" <<CONF
[server]
listen = "127.0.0.1:$EDGE"
threads = $THREADS
upgrade_sock = "$work/edge-upgrade.sock"
pid_file = "$work/edge.pid"
[upstreams.app]
address = "127.0.0.1:$UP"
[[routes]]
prefix = "/"
upstream = "app"
csp = "default-src 'self'"
CONF
target/release/esprit-edge --config "$work/edge.toml" > "$work/edge.log" 2>&1 & pids+=($!)

# The same edge with the session gate on the route: the gate's cost.
mkdir -p "$work/gate"
cat > "$work/gate.toml" <<CONF
[server]
listen = "127.0.0.1:$GATE"
threads = $THREADS
data_dir = "$work/gate"
upgrade_sock = "$work/gate-upgrade.sock"
pid_file = "$work/gate.pid"
[upstreams.app]
address = "127.0.0.1:$UP"
[[routes]]
prefix = "/"
upstream = "app"
csp = "default-src 'self'"
auth = "session"
[[routes]]
prefix = "/auth/"
kind = "auth"
CONF
printf 'bench-password-1' | target/release/esprit-edge --config "$work/gate.toml" user add bench --password-stdin >/dev/null
target/release/esprit-edge --config "$work/gate.toml" > "$work/gate.log" 2>&1 & pids+=($!)

# STORAGE=redis: the same gated edge, its sessions in Redis.
REDIS_GATE=""
if [ "${STORAGE:-}" = redis ]; then
  RPORT=$(free_port); REDIS_GATE=$(free_port)
  mkdir -p "$work/redis" "$work/gredis"
  redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$work/redis" --save '' --appendonly no > /dev/null & pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  sed -e "s/127.0.0.1:$GATE/127.0.0.1:$REDIS_GATE/" -e "s|$work/gate|$work/gredis|g" "$work/gate.toml" > "$work/gredis.toml"
  printf '[storage]\nurl = "redis://127.0.0.1:%s"\n' "$RPORT" >> "$work/gredis.toml"
  printf 'bench-password-1' | target/release/esprit-edge --config "$work/gredis.toml" user add bench --password-stdin >/dev/null
  target/release/esprit-edge --config "$work/gredis.toml" > "$work/gredis.log" 2>&1 & pids+=($!)
fi

# A bare Pingora proxy (no filters): the floor, so the edge's own cost shows.
target/release/examples/bare_proxy "127.0.0.1:$BARE" "127.0.0.1:$UP" "$THREADS" > "$work/bare.log" 2>&1 & pids+=($!)

for _ in $(seq 100); do curl -fs "http://127.0.0.1:$GATE/healthz" >/dev/null && break; sleep 0.1; done
COOKIE=$(curl -s -o /dev/null -D - -H 'Sec-Fetch-Site: same-origin' --data 'username=bench&password=bench-password-1' "http://127.0.0.1:$GATE/auth/login" | awk -F'[:;] *' 'tolower($1)=="set-cookie" && $2 ~ /^esprit_session=/ {print $2}')
[ -n "$COOKIE" ] || { echo "could not sign in to the gated edge" >&2; cat "$work/gate.log" >&2; exit 1; }
if [ -n "$REDIS_GATE" ]; then
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$REDIS_GATE/healthz" >/dev/null && break; sleep 0.1; done
  RCOOKIE=$(curl -s -o /dev/null -D - -H 'Sec-Fetch-Site: same-origin' --data 'username=bench&password=bench-password-1' "http://127.0.0.1:$REDIS_GATE/auth/login" | awk -F'[:;] *' 'tolower($1)=="set-cookie" && $2 ~ /^esprit_session=/ {print $2}')
  [ -n "$RCOOKIE" ] || { echo "could not sign in to the Redis edge" >&2; cat "$work/gredis.log" >&2; exit 1; }
fi

for port in $UP $NGX $EDGE $BARE; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/bench" >/dev/null && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:$port/bench" >/dev/null || { echo "port $port never answered" >&2; cat "$work"/*/error.log "$work/edge.log" >&2; exit 1; }
done

# wrk prints latency with units; normalise to milliseconds.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.3f", v}'; }
run() { # name port [header] -> "rps p50 p99"
  local out
  if [ -n "${3:-}" ]; then
    out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -H "$3" "http://127.0.0.1:$2/bench")
  else
    out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$2/bench")
  fi
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)
  p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)
  echo "$rps $p50 $p99"
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo "# esprit-edge vs nginx (and bare Pingora): 1 KiB, keep-alive, wrk -t1 -c$CONNS -d${SECS}s, $ROUNDS alternated rounds, $THREADS proxy thread(s)"
printf '%-6s %-12s %10s %9s %9s\n' round proxy req/s p50_ms p99_ms
: > "$work/edge.res"; : > "$work/ngx.res"; : > "$work/bare.res"; : > "$work/gate.res"; : > "$work/gredis.res"
for r in $(seq "$ROUNDS"); do
  # Rotate who goes first so drift in machine load falls on all.
  case $(( r % 3 )) in
    1) order="edge nginx bare gate" ;;
    2) order="nginx bare gate edge" ;;
    *) order="bare gate edge nginx" ;;
  esac
  [ -n "$REDIS_GATE" ] && order="$order redis"
  for who in $order; do
    case $who in
      edge) res=$(run edge "$EDGE"); echo "$res" >> "$work/edge.res" ;;
      nginx) res=$(run nginx "$NGX"); echo "$res" >> "$work/ngx.res" ;;
      bare) res=$(run bare "$BARE"); echo "$res" >> "$work/bare.res" ;;
      gate) res=$(run gate "$GATE" "Cookie: $COOKIE"); echo "$res" >> "$work/gate.res" ;;
      redis) res=$(run redis "$REDIS_GATE" "Cookie: $RCOOKIE"); echo "$res" >> "$work/gredis.res" ;;
    esac
    read -r rps p50 p99 <<<"$res"
    printf '%-6s %-12s %10s %9s %9s\n' "$r" "$who" "$rps" "$p50" "$p99"
  done
done

e_rps=$(cut -d' ' -f1 "$work/edge.res" | median); n_rps=$(cut -d' ' -f1 "$work/ngx.res" | median)
e_p50=$(cut -d' ' -f2 "$work/edge.res" | median); n_p50=$(cut -d' ' -f2 "$work/ngx.res" | median)
e_p99=$(cut -d' ' -f3 "$work/edge.res" | median); n_p99=$(cut -d' ' -f3 "$work/ngx.res" | median)
g_rps=$(cut -d' ' -f1 "$work/gate.res" | median); g_p50=$(cut -d' ' -f2 "$work/gate.res" | median); g_p99=$(cut -d' ' -f3 "$work/gate.res" | median)
b_rps=$(cut -d' ' -f1 "$work/bare.res" | median); b_p50=$(cut -d' ' -f2 "$work/bare.res" | median); b_p99=$(cut -d' ' -f3 "$work/bare.res" | median)
echo
echo "median       req/s     p50_ms   p99_ms"
printf 'esprit-edge  %-9s %-8s %-8s\n' "$e_rps" "$e_p50" "$e_p99"
printf 'nginx        %-9s %-8s %-8s\n' "$n_rps" "$n_p50" "$n_p99"
printf 'bare pingora %-9s %-8s %-8s\n' "$b_rps" "$b_p50" "$b_p99"
printf 'edge + gate  %-9s %-8s %-8s\n' "$g_rps" "$g_p50" "$g_p99"
awk -v a="$e_rps" -v b="$n_rps" -v c="$e_p50" -v d="$n_p50" -v e="$e_p99" -v f="$n_p99" \
  'BEGIN {printf "ratio edge/nginx: req/s %.2f, p50 %.2f, p99 %.2f\n", a/b, c/d, e/f}'
awk -v a="$e_rps" -v b="$b_rps" -v n="$n_rps" \
  'BEGIN {printf "ratio edge/bare-pingora: req/s %.2f; bare-pingora/nginx: req/s %.2f\n", a/b, b/n}'
awk -v g="$g_rps" -v e="$e_rps" 'BEGIN {printf "ratio gated/ungated edge (session check cost): req/s %.2f (of medians)", g/e}'
# Each round's gated/ungated pair ran back to back (or close), so the median
# of per-round ratios is less hurt by load drifting between rounds.
paste -d' ' <(cut -d' ' -f1 "$work/gate.res") <(cut -d' ' -f1 "$work/edge.res") \
  | awk '{printf "%.4f\n", $1/$2}' | median | awk '{printf ", %.2f (median of per-round ratios)\n", $1}'
if [ -n "$REDIS_GATE" ]; then
  r_rps=$(cut -d' ' -f1 "$work/gredis.res" | median); r_p50=$(cut -d' ' -f2 "$work/gredis.res" | median); r_p99=$(cut -d' ' -f3 "$work/gredis.res" | median)
  printf 'gate, Redis  %-9s %-8s %-8s\n' "$r_rps" "$r_p50" "$r_p99"
  awk -v r="$r_rps" -v g="$g_rps" 'BEGIN {printf "ratio gated on Redis / gated on SQLite: req/s %.2f (of medians)", r/g}'
  paste -d' ' <(cut -d' ' -f1 "$work/gredis.res") <(cut -d' ' -f1 "$work/gate.res") \
    | awk '{printf "%.4f\n", $1/$2}' | median | awk '{printf ", %.2f (median of per-round ratios)\n", $1}'
fi
