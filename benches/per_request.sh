#!/usr/bin/env bash
# Per-request cost of the three contenders, in counts that do not move with
# machine noise (issue 12's stable measure): user-space instructions
# (callgrind), heap allocations (valgrind dhat: blocks and bytes) and system
# calls (strace -f -c), each per proxied request. nginx (one worker, master
# off, access log on, the proxy config benches/proxy.sh uses), bare Pingora
# (examples/bare_proxy.rs) and the edge on its default filter chain (access
# log on) proxy the same 1 KiB upstream. Each tool runs each contender twice,
# with N1 and N2 keep-alive requests (h2load --h1 -c 4), and the per-request
# figure is (C(N2) - C(N1)) / (N2 - N1), so start-up and shutdown cancel.
#
# Usage: benches/per_request.sh [n1=1000] [n2=5000]
#   ONLY="edge bare" limits the contenders; TOOLS="callgrind" the tools;
#   KEEP=dir keeps each callgrind profile as dir/WHO.N.callgrind, to read
#   with callgrind_annotate --inclusive=yes (where the difference lies).
# Needs: scripts/setup --bench (nginx-light, h2load, valgrind) and strace.
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${1:-1000}
N2=${2:-5000}
ONLY=${ONLY:-"nginx bare edge"}
TOOLS=${TOOLS:-"callgrind dhat strace"}

scripts/setup --bench
command -v strace >/dev/null || { echo "strace is needed (apt-get install strace)" >&2; exit 1; }
cargo build --release --locked -q --bin esprit-edge --example bare_proxy

. benches/lib.sh
bench_init esprit-per-request
start_upstream_1k
mkdir -p "$work/ngx"
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$UP/bench" >/dev/null && break; sleep 0.1; done

ngx_conf() { # port
  cat <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $work/ngx/nginx.pid;
error_log $work/ngx/error.log warn;
events { worker_connections 4096; }
http {
  access_log $work/ngx/access.log;
  keepalive_requests 100000;
  upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$1;
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
}

edge_conf() { # port
  cat <<CONF
[server]
listen = "127.0.0.1:$1"
threads = 1
upgrade_sock = "$work/edge-upgrade.sock"
pid_file = "$work/edge.pid"
[upstreams.app]
address = "127.0.0.1:$UP"
[[routes]]
prefix = "/"
upstream = "app"
csp = "default-src 'self'"
CONF
}

# The command line of `who` listening on `port`.
command_of() { # who port
  case $1 in
    nginx) ngx_conf "$2" > "$work/ngx/nginx.conf"; echo "nginx -p $work/ngx -c $work/ngx/nginx.conf" ;;
    bare) echo "target/release/examples/bare_proxy 127.0.0.1:$2 127.0.0.1:$UP 1" ;;
    edge) edge_conf "$2" > "$work/edge.toml"; echo "target/release/esprit-edge --config $work/edge.toml" ;;
  esac
}

# Runs `who` under `tool`, sends `n` requests, prints the tool's total.
measure() { # tool who n
  local tool=$1 who=$2 n=$3 port cmd pid
  port=$(free_port)
  cmd=$(command_of "$who" "$port")
  rm -f "$work/out.$tool"
  case $tool in
    callgrind) valgrind --tool=callgrind --callgrind-out-file="$work/out.callgrind" $cmd > "$work/run.log" 2>&1 & ;;
    dhat) valgrind --tool=dhat --dhat-out-file=/dev/null $cmd > "$work/run.log" 2> "$work/out.dhat" & ;;
    strace) strace -f -c -o "$work/out.strace" $cmd > "$work/run.log" 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$port/bench" >/dev/null 2>&1 && break; sleep 0.2; done
  h2load --h1 -n "$n" -c 4 "http://127.0.0.1:$port/bench" > "$work/h2load.txt"
  grep -q "0 failed, 0 errored" "$work/h2load.txt" || { echo "h2load saw failures ($who):" >&2; grep -E "requests:|status codes" "$work/h2load.txt" >&2; exit 1; }
  # nginx without a master ends on SIGTERM, the edge too (its grace period
  # is 1 s); bare Pingora keeps Pingora's default grace period (minutes),
  # so it gets SIGINT, its fast exit. Each tool writes its counts at exit.
  # Under strace, the proxy is strace's child: signal it, and strace
  # writes its table once the child is gone.
  local target=$pid
  [ "$tool" = strace ] && target=$(pgrep -P "$pid" | head -1)
  local sig=TERM
  [ "$who" = bare ] && sig=INT
  kill -"$sig" "$target"; wait "$pid" 2>/dev/null || true
  if [ "$tool" = callgrind ] && [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"; cp "$work/out.callgrind" "$KEEP/$who.$n.callgrind"
  fi
  case $tool in
    callgrind) awk '/^summary:/ {print $2}' "$work/out.callgrind" ;;
    # "Total:     1,234 bytes in 56 blocks": blocks, then bytes.
    dhat) awk '/Total:/ {gsub(",", ""); for (i = 1; i <= NF; i++) { if ($i == "bytes") b = $(i-1); if ($i == "blocks") k = $(i-1) } } END {print k, b}' "$work/out.dhat" ;;
    strace) awk '$NF == "total" {print $(NF-2)}' "$work/out.strace" ;;
  esac
}

per_request() { # a(N1) b(N2)
  awk -v a="$1" -v b="$2" -v n1="$N1" -v n2="$N2" 'BEGIN {printf "%.1f", (b - a) / (n2 - n1)}'
}

echo "# per proxied request: 1 KiB, keep-alive, h2load --h1 -c 4, N = $N1 and $N2, one thread/worker each"
printf '%-8s %14s %14s %14s %12s\n' who instructions allocations alloc_bytes syscalls
for who in $ONLY; do
  ins=-; blocks=-; bytes=-; sys=-
  for tool in $TOOLS; do
    a=$(measure "$tool" "$who" "$N1"); b=$(measure "$tool" "$who" "$N2")
    case $tool in
      callgrind) ins=$(per_request "$a" "$b") ;;
      dhat) blocks=$(per_request "${a% *}" "${b% *}"); bytes=$(per_request "${a#* }" "${b#* }") ;;
      strace) sys=$(per_request "$a" "$b") ;;
    esac
  done
  printf '%-8s %14s %14s %14s %12s\n' "$who" "$ins" "$blocks" "$bytes" "$sys"
done
