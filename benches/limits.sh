#!/usr/bin/env bash
# What the shipped rate rules cost in requests/s: the same release edge, once
# without [[limits]] and once with the shipped rules (conf/esprit-edge.toml)
# whose rates are raised so the load never hits them, both in front of the
# same 1 KiB upstream; alternated rounds, medians, the ratio with/without.
# (benches/gate_instructions.sh LIMITS=1 gives the same cost in instructions.)
#
# Usage: benches/limits.sh [rounds=5] [seconds=8] [connections=50]
# Needs: scripts/setup --bench (nginx-light, wrk). Everything runs on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECS=${2:-8}
CONNS=${3:-50}

scripts/setup --bench
cargo build --release --locked -q --bin esprit-edge

. benches/lib.sh
bench_init esprit-limits
start_upstream_1k
OFF=$(free_port); ON=$(free_port)

edge_conf() { # name port
  cat <<CONF
[server]
listen = "127.0.0.1:$2"
threads = 1
data_dir = "$work/$1"
upgrade_sock = "$work/$1-upgrade.sock"
pid_file = "$work/$1.pid"
[upstreams.app]
address = "127.0.0.1:$UP"
[[routes]]
prefix = "/"
upstream = "app"
csp = "default-src 'self'"
CONF
}
edge_conf off "$OFF" > "$work/off.toml"
edge_conf on "$ON" > "$work/on.toml"
sed -n '/^\[\[limits\]\]/,$p' conf/esprit-edge.toml \
  | sed 's/^burst = .*/burst = 1000000/; s/^rate = .*/rate = "1000000\/s"/' >> "$work/on.toml"
grep -c '^\[\[limits\]\]' "$work/on.toml" | grep -qv '^0$' || { echo "no [[limits]] in the shipped config" >&2; exit 1; }
for c in off on; do target/release/esprit-edge --config "$work/$c.toml" > "$work/$c.log" 2>&1 & pids+=($!); done
for port in $UP $OFF $ON; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/bench" >/dev/null && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:$port/bench" >/dev/null || { echo "port $port never answered" >&2; cat "$work"/*.log >&2; exit 1; }
done

run() { # port -> req/s (and fails on any non-2xx: a refused request would flatter the limits)
  local out
  out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$1/bench")
  if grep -q 'Non-2xx' <<<"$out"; then echo "non-2xx answers on port $1:" >&2; echo "$out" >&2; exit 1; fi
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo "# edge without and with the shipped rate rules: 1 KiB, keep-alive, wrk -t1 -c$CONNS -d${SECS}s, $ROUNDS alternated rounds"
printf '%-6s %-14s %10s\n' round edge req/s
: > "$work/off.res"; : > "$work/on.res"; : > "$work/ratio.res"
for r in $(seq "$ROUNDS"); do
  if (( r % 2 )); then order="off on"; else order="on off"; fi
  for who in $order; do
    port=$OFF; [ "$who" = on ] && port=$ON
    rps=$(run "$port"); echo "$rps" >> "$work/$who.res"
    printf '%-6s %-14s %10s\n' "$r" "limits-$who" "$rps"
  done
  paste -d' ' <(tail -1 "$work/on.res") <(tail -1 "$work/off.res") | awk '{printf "%.4f\n", $1/$2}' >> "$work/ratio.res"
done
on=$(median < "$work/on.res"); off=$(median < "$work/off.res")
printf '\nmedian req/s: without limits %s, with the shipped limits %s\n' "$off" "$on"
awk -v a="$on" -v b="$off" 'BEGIN {printf "ratio with/without: %.3f (of medians)", a/b}'
median < "$work/ratio.res" | awk '{printf ", %.3f (median of per-round ratios)\n", $1}'
