#!/usr/bin/env bash
# The session gate's cost in CPU instructions per request, counted by
# callgrind: unlike req/s on a shared 2-core machine, the count is the same
# run after run. The same release edge proxies 1 KiB from nginx once on an
# open route and once on a gated one (a signed-in cookie, every request
# checked). Each is run twice, with N1 and N2 keep-alive requests (h2load
# --h1), and the per-request cost is (I(N2) - I(N1)) / (N2 - N1), so start-up
# and shutdown cancel out. A third route is gated with `assertion = false`,
# so the signed identity assertion's own cost shows (issue 13).
#
# Usage: benches/gate_instructions.sh [n1=2000] [n2=12000]
#   KEEP_PROFILE=/tmp/gate keeps each callgrind profile (for callgrind_annotate).
#   LIMITS=1 adds the shipped rate rules (per IP on everything, per user on
#   runs, ...) so their cost shows against a run without them.
# Needs: scripts/setup --bench (nginx-light, h2load, valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${1:-2000}
N2=${2:-12000}

scripts/setup --bench
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --locked -q --bin esprit-edge

. benches/lib.sh
bench_init esprit-gate
start_upstream_1k

# One config, three routes: /open/ and /gated/ differ only in `auth`;
# /bare-gate/ is /gated/ without the identity assertion.
cat > "$work/edge.toml" <<CONF
[server]
threads = 1
data_dir = "$work/data"
upgrade_sock = "$work/edge-upgrade.sock"
pid_file = "$work/edge.pid"
[upstreams.app]
address = "127.0.0.1:$UP"
[[routes]]
prefix = "/open/"
upstream = "app"
csp = "default-src 'self'"
[[routes]]
prefix = "/gated/"
upstream = "app"
csp = "default-src 'self'"
auth = "session"
[[routes]]
prefix = "/bare-gate/"
upstream = "app"
csp = "default-src 'self'"
auth = "session"
assertion = false
[[routes]]
prefix = "/auth/"
kind = "auth"
CONF
if [ "${LIMITS:-0}" = 1 ]; then
  # The shipped [[limits]], generous enough that the bench never hits them.
  sed -n '/^\[\[limits\]\]/,$p' conf/esprit-edge.toml | sed 's/^burst = .*/burst = 1000000/; s/^rate = .*/rate = "1000000\/s"/' >> "$work/edge.toml"
fi
printf 'bench-password-1' | target/release/esprit-edge --config "$work/edge.toml" user add bench --password-stdin >/dev/null

# Runs the edge under callgrind, sends `n` requests to `path`; prints the instruction count.
count() { # path n
  local port out
  port=$(free_port)
  rm -f "$work/cg.out"
  ESPRIT_LISTEN="127.0.0.1:$port" valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    target/release/esprit-edge --config "$work/edge.toml" > "$work/edge.log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
  local cookie
  cookie=$(curl -s -o /dev/null -D - -H 'Sec-Fetch-Site: same-origin' --data 'username=bench&password=bench-password-1' \
    "http://127.0.0.1:$port/auth/login" | awk -F'[:;] *' 'tolower($1)=="set-cookie" && $2 ~ /^esprit_session=/ {print $2}')
  [ -n "$cookie" ] || { echo "could not sign in" >&2; cat "$work/edge.log" >&2; exit 1; }
  # Both routes get the cookie, so only the gate differs (the open route forwards it as is).
  h2load --h1 -n "$2" -c 4 -H "Cookie: $cookie" "http://127.0.0.1:$port$1" > "$work/h2load.txt"
  grep -q "0 failed, 0 errored" "$work/h2load.txt" || { echo "h2load saw failures:" >&2; grep -E "requests:|status codes" "$work/h2load.txt" >&2; exit 1; }
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  [ -n "${KEEP_PROFILE:-}" ] && cp "$work/cg.out" "$KEEP_PROFILE$(tr / _ <<<"$1").$2"
  awk '/^summary:/ {print $2}' "$work/cg.out"
}

echo "# instructions per request (callgrind), 1 KiB proxied, keep-alive, N = $N1 and $N2"
o1=$(count /open/x "$N1"); o2=$(count /open/x "$N2")
g1=$(count /gated/x "$N1"); g2=$(count /gated/x "$N2")
b1=$(count /bare-gate/x "$N1"); b2=$(count /bare-gate/x "$N2")
awk -v o1="$o1" -v o2="$o2" -v g1="$g1" -v g2="$g2" -v b1="$b1" -v b2="$b2" -v n1="$N1" -v n2="$N2" 'BEGIN {
  o = (o2 - o1) / (n2 - n1); g = (g2 - g1) / (n2 - n1); b = (b2 - b1) / (n2 - n1)
  printf "open route:  %.0f instructions/request\n", o
  printf "gated route: %.0f instructions/request\n", g
  printf "gated, assertion = false: %.0f instructions/request\n", b
  printf "gate: +%.0f instructions (+%.1f%%); open/gated = %.3f (the req/s ratio if CPU-bound in the edge)\n", g - o, 100 * (g - o) / o, o / g
  printf "assertion: +%.0f instructions; gated without/with = %.3f\n", g - b, b / g
}'
