#!/usr/bin/env bash
# Memory of the rate rules under key rotation: 100,000 requests, each from a
# different client IP (X-Forwarded-For from a trusted proxy, so one loopback
# client can play them all), against one per-IP rule. Prints the edge's RSS
# before, right after, and after the keys went fresh and were pruned, plus
# how many requests the rule refused (none should be: each IP sends one).
#
# Usage: benches/limit_keys.sh [keys=100000]
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${1:-100000}
cargo build --release --locked -q --bin esprit-edge

. benches/lib.sh
bench_init esprit-limit-keys
PORT=$(free_port)
cat > "$work/edge.toml" <<CONF
[server]
listen = "127.0.0.1:$PORT"
threads = 1
data_dir = "$work/data"
upgrade_sock = "$work/edge-upgrade.sock"
pid_file = "$work/edge.pid"
trusted_proxies = ["127.0.0.1"]
[[routes]]
prefix = "/"
to = "/elsewhere"
[[limits]]
name = "per-ip"
prefix = "/"
key = "ip"
rate = "10/s"
burst = 10
CONF
target/release/esprit-edge --config "$work/edge.toml" > "$work/edge.log" 2>&1 & pids+=($!)
EDGE_PID=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$EDGE_PID/status"; }
before=$(rss)
python3 - "$PORT" "$KEYS" <<'PY'
import socket, sys, threading
port, keys = int(sys.argv[1]), int(sys.argv[2])
refused = [0]
def client(first, step):
    # One keep-alive connection per thread, one request at a time (no pipelining).
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    for i in range(first, keys, step):
        ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        s.sendall(f"GET /x HTTP/1.1\r\nHost: bench\r\nX-Forwarded-For: {ip}\r\n\r\n".encode())
        status = f.readline()
        if b" 429 " in status:
            refused[0] += 1
        length = 0
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        f.read(length)
threads = [threading.Thread(target=client, args=(t, 4)) for t in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(f"requests: {keys}, refused: {refused[0]}")
PY
after=$(rss)
sleep 12   # keys are fresh after 1 s; the prune runs every 10 s
pruned=$(rss)
echo "RSS KiB: before $before, after $KEYS keys $after (+$((after - before))), after the prune $pruned"
