#!/usr/bin/env bash
# Memory per idle connection, side by side (issue 12): nginx (one worker,
# master off), bare Pingora (examples/bare_proxy.rs, plain only) and the edge
# on its default filter chain hold N client connections, each after one
# request, and the proxy's resident memory (VmRSS) is read before and after:
# (after - before) / N. Kinds:
#   plain  keep-alive HTTP/1.1 after one 1 KiB response
#   tls    the same over TLS (h1; a test-only certificate made here)
#   sse    a proxied SSE stream held open, after its first event
# Memory, not time: the figures do not move with machine noise, but the
# allocator's reuse does, so each is the median of ROUNDS runs.
#
# Usage: benches/idle_memory.sh [connections=2000] [rounds=3]
#   KINDS="plain sse" and ONLY="edge nginx" limit what runs.
# Needs: scripts/setup --bench (nginx-light), openssl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
ROUNDS=${2:-3}
KINDS=${KINDS:-"plain tls sse"}
ONLY=${ONLY:-"nginx bare edge"}
ulimit -n 20000

scripts/setup --bench
cargo build --release --locked -q --bin esprit-edge --example bare_proxy

. benches/lib.sh
bench_init esprit-idle
start_upstream_1k
mkdir -p "$work/ngx"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 644 "$work/key.pem"   # test-only key, in a temp dir removed on exit

# The SSE upstream: one event, then the stream stays open.
SSE=$(free_port)
python3 - "$SSE" <<'PY' & pids+=($!)
import asyncio, sys
async def serve(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                 b"Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    ev = b"data: hello\n\n"
    writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
    await writer.drain()
    await reader.read()   # until the proxy hangs up
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await server.serve_forever()
asyncio.run(main())
PY

ngx_conf() { # port tls_port
  cat <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $work/ngx/nginx.pid;
error_log $work/ngx/error.log warn;
events { worker_connections 8192; }
http {
  access_log $work/ngx/access.log;
  keepalive_requests 100000;
  keepalive_timeout 300s;
  upstream app { server 127.0.0.1:$UP; keepalive 64; }
  upstream sse { server 127.0.0.1:$SSE; }
  server {
    listen 127.0.0.1:$1 backlog=4096;
    listen 127.0.0.1:$2 ssl backlog=4096;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      add_header X-Content-Type-Options nosniff;
    }
    location /events {
      proxy_pass http://sse;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout 300s;
    }
  }
}
CONF
}

edge_conf() { # port tls_port
  cat <<CONF
[server]
listen = "127.0.0.1:$1"
threads = 1
upgrade_sock = "$work/edge-upgrade.sock"
pid_file = "$work/edge.pid"
keepalive_timeout = "300s"
max_connections = 100000
max_connections_per_ip = 100000
max_streams_per_ip = 100000
[tls]
listen = "127.0.0.1:$2"
cert = "$work/cert.pem"
key = "$work/key.pem"
[upstreams.app]
address = "127.0.0.1:$UP"
[upstreams.sse]
address = "127.0.0.1:$SSE"
[[routes]]
prefix = "/events"
upstream = "sse"
stream = true
[[routes]]
prefix = "/"
upstream = "app"
csp = "default-src 'self'"
CONF
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Starts `who`, holds N connections of `kind`, prints KiB per connection.
measure() { # who kind
  local who=$1 kind=$2 port tport pid before after holder
  port=$(free_port); tport=$(free_port)
  case $who in
    nginx) ngx_conf "$port" "$tport" > "$work/ngx/nginx.conf"
           nginx -p "$work/ngx" -c "$work/ngx/nginx.conf" > "$work/run.log" 2>&1 & ;;
    bare)  target/release/examples/bare_proxy "127.0.0.1:$port" "127.0.0.1:$UP" 1 > "$work/run.log" 2>&1 & ;;
    edge)  edge_conf "$port" "$tport" > "$work/edge.toml"
           ESPRIT_DATA_DIR="$work/data" target/release/esprit-edge --config "$work/edge.toml" > "$work/run.log" 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/bench" >/dev/null 2>&1 && break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null || { echo "$who did not start:" >&2; tail -5 "$work/run.log" >&2; exit 1; }
  # Warm: the first connections' one-time allocations are not per connection.
  local target=$port
  [ "$kind" = tls ] && target=$tport
  python3 benches/hold_idle.py 127.0.0.1 "$target" "$kind" 50 > "$work/warm.out" 2>&1 & holder=$!
  for _ in $(seq 100); do grep -q ready "$work/warm.out" 2>/dev/null && break; sleep 0.1; done
  kill "$holder"; wait "$holder" 2>/dev/null || true
  sleep 1
  before=$(rss_kib "$pid")
  python3 benches/hold_idle.py 127.0.0.1 "$target" "$kind" "$N" > "$work/hold.out" 2>&1 & holder=$!
  for _ in $(seq 600); do grep -q ready "$work/hold.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "ready $N" "$work/hold.out" || { echo "holder failed ($who $kind):" >&2; cat "$work/hold.out" >&2; exit 1; }
  sleep 2
  after=$(rss_kib "$pid")
  kill "$holder"; wait "$holder" 2>/dev/null || true
  local sig=TERM
  [ "$who" = bare ] && sig=INT
  kill -"$sig" "$pid"; wait "$pid" 2>/dev/null || true
  awk -v a="$before" -v b="$after" -v n="$N" 'BEGIN {printf "%.1f", (b - a) / n}'
}

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

echo "# KiB of resident memory per idle connection, $N held, median of $ROUNDS, one thread/worker each"
printf '%-8s' who; for k in $KINDS; do printf '%10s' "$k"; done; echo
for who in $ONLY; do
  printf '%-8s' "$who"
  for kind in $KINDS; do
    if [ "$who" = bare ] && [ "$kind" != plain ]; then printf '%10s' -; continue; fi
    runs=""
    for _ in $(seq "$ROUNDS"); do runs="$runs $(measure "$who" "$kind")"; done
    printf '%10s' "$(echo "$runs" | median)"
  done
  echo
done
