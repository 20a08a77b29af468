#!/usr/bin/env bash
# TLS side by side (issue 12): esprit-edge and nginx terminate TLS (ECDSA
# P-256, a test-only certificate made here) in front of the same 1 KiB
# upstream, one thread/worker each, alternated rounds, medians. h2load drives
# HTTP/1.1 (--h1 -c CONNS) and HTTP/2 (-c CONNS -m 10) over keep-alive, and
# new connections (one request each). Besides req/s, the proxy's own CPU
# time per request (utime + stime from /proc, µs) is printed: it does not
# depend on how much CPU the load generator took from the shared cores.
#
# Usage: benches/proxy_tls.sh [rounds=3] [requests=60000] [connections=50]
# Needs: scripts/setup --bench (nginx-light, h2load), openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
REQS=${2:-60000}
CONNS=${3:-50}
NEW=2000   # new connections per round, all open at once, one request each
ulimit -n 20000

scripts/setup --bench
cargo build --release --locked -q --bin esprit-edge

. benches/lib.sh
bench_init esprit-tls
start_upstream_1k
NGX=$(free_port); EDGE=$(free_port); EDGE_PLAIN=$(free_port)
mkdir -p "$work/ngx"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 644 "$work/key.pem"   # test-only key in a temp dir removed on exit; nginx's worker reads it

cat > "$work/ngx/nginx.conf" <<CONF
worker_processes 1;
pid $work/ngx/nginx.pid;
error_log $work/ngx/error.log warn;
events { worker_connections 4096; }
http {
  access_log $work/ngx/access.log;
  keepalive_requests 100000;
  upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX ssl http2 backlog=4096;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
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
NGX_MASTER=$!

cat > "$work/edge.toml" <<CONF
[server]
listen = "127.0.0.1:$EDGE_PLAIN"
threads = 1
upgrade_sock = "$work/edge-upgrade.sock"
pid_file = "$work/edge.pid"
max_connections_per_ip = 10000
[tls]
listen = "127.0.0.1:$EDGE"
cert = "$work/cert.pem"
key = "$work/key.pem"
[upstreams.app]
address = "127.0.0.1:$UP"
[[routes]]
prefix = "/"
upstream = "app"
csp = "default-src 'self'"
CONF
target/release/esprit-edge --config "$work/edge.toml" > "$work/edge.log" 2>&1 & pids+=($!)
EDGE_PID=$!

for port in $NGX $EDGE; do
  for _ in $(seq 100); do curl -kfs "https://127.0.0.1:$port/bench" >/dev/null && break; sleep 0.1; done
  curl -kfs "https://127.0.0.1:$port/bench" >/dev/null || { echo "port $port never answered" >&2; cat "$work/ngx/error.log" "$work/edge.log" >&2; exit 1; }
done
# The process whose CPU counts: nginx's one worker, the edge itself.
NGX_PID=$(pgrep -P "$NGX_MASTER" | head -1)
TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # pid port mode -> "rps cpu_us_per_request"
  local pid=$1 port=$2 mode=$3 args=() out t0 t1 n=$REQS
  case $mode in
    h1) args=(--h1 -c "$CONNS") ;;
    h2) args=(-c "$CONNS" -m 10) ;;
    new) n=$NEW ;;
  esac
  t0=$(cpu_ticks "$pid")
  if [ "$mode" = new ]; then
    # One request per connection: h2load's -n with as many clients as requests.
    out=$(h2load --h1 -n "$n" -c "$n" "https://127.0.0.1:$port/bench" 2>&1 || true)
  else
    out=$(h2load -n "$n" "${args[@]}" "https://127.0.0.1:$port/bench" 2>&1 || true)
  fi
  t1=$(cpu_ticks "$pid")
  grep -q "succeeded, 0 failed, 0 errored" <<<"$out" || { echo "h2load failed against $port ($mode):" >&2; grep -E "requests:|status codes|error" <<<"$out" | head -5 >&2; }
  local rps
  rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out")
  awk -v r="$rps" -v a="$t0" -v b="$t1" -v t="$TICK" -v n="$n" 'BEGIN {printf "%s %.1f\n", r, (b - a) / t * 1e6 / n}'
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo "# TLS: esprit-edge vs nginx, 1 KiB, h2load, $REQS requests (new connections: $NEW), $ROUNDS alternated rounds, one thread/worker each"
printf '%-6s %-5s %-7s %10s %12s\n' round mode proxy req/s cpu_us/req
for mode in h1 h2 new; do : > "$work/edge.$mode"; : > "$work/ngx.$mode"; done
for r in $(seq "$ROUNDS"); do
  for mode in h1 h2 new; do
    order="edge nginx"; [ $((r % 2)) = 0 ] && order="nginx edge"
    for who in $order; do
      if [ "$who" = edge ]; then res=$(run "$EDGE_PID" "$EDGE" "$mode"); echo "$res" >> "$work/edge.$mode"
      else res=$(run "$NGX_PID" "$NGX" "$mode"); echo "$res" >> "$work/ngx.$mode"; fi
      read -r rps cpu <<<"$res"
      printf '%-6s %-5s %-7s %10s %12s\n' "$r" "$mode" "$who" "$rps" "$cpu"
    done
  done
done
echo
printf '%-5s %12s %12s %12s %12s %10s %10s\n' mode edge_req/s nginx_req/s edge_cpu_us nginx_cpu_us req/s_ratio cpu_ratio
for mode in h1 h2 new; do
  er=$(cut -d' ' -f1 "$work/edge.$mode" | median); nr=$(cut -d' ' -f1 "$work/ngx.$mode" | median)
  ec=$(cut -d' ' -f2 "$work/edge.$mode" | median); nc=$(cut -d' ' -f2 "$work/ngx.$mode" | median)
  awk -v m="$mode" -v a="$er" -v b="$nr" -v c="$ec" -v d="$nc" \
    'BEGIN {printf "%-5s %12s %12s %12s %12s %10.2f %10.2f\n", m, a, b, c, d, a/b, c/d}'
done
