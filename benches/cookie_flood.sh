#!/usr/bin/env bash
# Signed-in users' throughput while a flood of random, well-formed session
# cookies hits the same gated edge (each one unknown: 401). The control run
# sends the same flood with the random value in a cookie the edge ignores, so
# the load and the client's work are the same and only the session lookups
# differ. Alternated rounds, medians; the ratio flood/control is what unknown
# cookies cost signed-in users (issue 10's bar: at least 0.90).
#
# Usage: benches/cookie_flood.sh [rounds=5] [seconds=8] [connections=25]
#   (each side, signed-in and flood, uses that many connections)
# Needs: scripts/setup --bench (nginx-light, wrk). Everything runs on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECS=${2:-8}
CONNS=${3:-25}

scripts/setup --bench
cargo build --release --locked -q --bin esprit-edge

. benches/lib.sh
bench_init esprit-cookie-flood
start_upstream_1k
EDGE=$(free_port)
cat > "$work/edge.toml" <<CONF
[server]
listen = "127.0.0.1:$EDGE"
threads = 1
data_dir = "$work/data"
upgrade_sock = "$work/edge-upgrade.sock"
pid_file = "$work/edge.pid"
[upstreams.app]
address = "127.0.0.1:$UP"
[[routes]]
prefix = "/"
upstream = "app"
auth = "session"
[[routes]]
prefix = "/auth/"
kind = "auth"
CONF
printf 'bench-password-1' | target/release/esprit-edge --config "$work/edge.toml" user add bench --password-stdin >/dev/null
target/release/esprit-edge --config "$work/edge.toml" > "$work/edge.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$EDGE/healthz" >/dev/null && break; sleep 0.1; done
COOKIE=$(curl -s -o /dev/null -D - -H 'Sec-Fetch-Site: same-origin' --data 'username=bench&password=bench-password-1' "http://127.0.0.1:$EDGE/auth/login" | awk -F'[:;] *' 'tolower($1)=="set-cookie" && $2 ~ /^esprit_session=/ {print $2}')
[ -n "$COOKIE" ] || { echo "could not sign in" >&2; cat "$work/edge.log" >&2; exit 1; }
curl -fs -H "Cookie: $COOKIE" "http://127.0.0.1:$EDGE/bench" >/dev/null || { echo "signed-in request failed" >&2; exit 1; }

# The flood: a fresh random 64-hex value per request, in the session cookie
# (flood) or in a cookie nobody reads (control).
flood_script() { # cookie-name
  cat <<LUA
math.randomseed(os.time())
local hex = "0123456789abcdef"
request = function()
  local t = {}
  for i = 1, 64 do local k = math.random(16); t[i] = hex:sub(k, k) end
  return wrk.format("GET", "/bench", {["Cookie"] = "$1=" .. table.concat(t)})
end
LUA
}
flood_script esprit_session > "$work/flood.lua"
flood_script other_cookie > "$work/control.lua"
unknown=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: esprit_session=$(printf 'ab%.0s' $(seq 32))" "http://127.0.0.1:$EDGE/bench")
[ "$unknown" = 401 ] || { echo "an unknown session cookie got $unknown, not 401" >&2; exit 1; }

run() { # script -> signed-in req/s while the script floods
  wrk -t1 -c"$CONNS" -d"$((SECS + 2))s" -s "$work/$1.lua" "http://127.0.0.1:$EDGE/bench" > "$work/$1.wrk" &
  local flood=$!
  sleep 1
  wrk -t1 -c"$CONNS" -d"${SECS}s" -H "Cookie: $COOKIE" "http://127.0.0.1:$EDGE/bench" > "$work/signed.wrk"
  wait "$flood"
  grep -q 'Non-2xx' "$work/signed.wrk" && { echo "signed-in requests were refused:" >&2; cat "$work/signed.wrk" >&2; exit 1; }
  local f; f=$(awk '/Requests\/sec/ {print $2}' "$work/$1.wrk")
  echo "$(awk '/Requests\/sec/ {print $2}' "$work/signed.wrk") $f"
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo "# signed-in req/s under a flood of random session cookies vs a control flood; wrk -t1 -c$CONNS each, ${SECS}s, $ROUNDS alternated rounds"
printf '%-6s %-8s %14s %12s\n' round flood signed-in/s flood/s
: > "$work/flood.res"; : > "$work/control.res"; : > "$work/ratio.res"
for r in $(seq "$ROUNDS"); do
  if (( r % 2 )); then order="control flood"; else order="flood control"; fi
  for who in $order; do
    read -r s f <<<"$(run "$who")"
    echo "$s" >> "$work/$who.res"
    printf '%-6s %-8s %14s %12s\n' "$r" "$who" "$s" "$f"
  done
  paste -d' ' <(tail -1 "$work/flood.res") <(tail -1 "$work/control.res") | awk '{printf "%.4f\n", $1/$2}' >> "$work/ratio.res"
done
fl=$(median < "$work/flood.res"); co=$(median < "$work/control.res")
printf '\nmedian signed-in req/s: under the control flood %s, under random session cookies %s\n' "$co" "$fl"
awk -v a="$fl" -v b="$co" 'BEGIN {printf "ratio flood/control: %.3f (of medians)", a/b}'
median < "$work/ratio.res" | awk '{printf ", %.3f (median of per-round ratios)\n", $1}'
