#!/usr/bin/env bash
# The forward-auth benchmark, each figure a ratio to a baseline run in the same run:
#   1. tollgate's /check against its own /user: one process, one Redis, the same policy and
#      callers (benches/users.lua and benches/check.lua), requests/s;
#   2. nginx with tollgate's forward-auth (docs/gateways/nginx-403.conf) against the same nginx
#      passing straight to the same API, requests/s through nginx.
# Starts its own redis-server, tollgates and nginx; needs wrk, redis-server and nginx.
#
#   benches/gateway.sh             10 s per run; ROUNDS=3 alternates each pair three times
#   QUICK=1 benches/gateway.sh     2 s per run: a smoke test of the status codes, no speed
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-10s}
[ -n "${QUICK:-}" ] && duration=2s
rounds=${ROUNDS:-1}
connections=${CONNECTIONS:-32}
for tool in wrk redis-server nginx; do
  command -v "$tool" >/dev/null || { echo "benches/gateway.sh: $tool is not on PATH" >&2; exit 2; }
done
cargo build --release --quiet --bins
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/tollgate
. benches/lib.sh
# Two cores: the services under test on CPU 0, wrk and Redis on CPU 1.
pin_service=(taskset -c 0); pin_load=(taskset -c 1)
command -v taskset >/dev/null || { pin_service=(); pin_load=(); }

redis_port=$(free_port)
"${pin_load[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=("$!"); wait_port "$redis_port"

# start_tollgate NAME TOML: a tollgate on a free port, which it sets in `port`. Not called in
# $(...): a subshell's pids+= would be lost, and the process left running after the script.
start_tollgate() {
  port=$(free_port)
  printf 'listen = "127.0.0.1:%s"\n%s\n' "$port" "$2" > "$work/$1.toml"
  RUST_LOG=warn "${pin_service[@]}" "$bin" --config "$work/$1.toml" >"$work/$1.log" 2>&1 &
  pids+=("$!"); wait_port "$port" "$work/$1.log"
}

# Every decision admitted, so each request costs the same whichever way it arrives.
start_tollgate limiter "[redis]
url = \"redis://127.0.0.1:$redis_port\"
[identity]
trusted_proxies = [\"127.0.0.1/32\"]
[forward_auth]
path = \"/check\"
deny_status = 403
[[policies]]
name = \"per_user\"
limit = 1000000000
window = \"1h\""
limiter=$port
# The API behind nginx: a tollgate with no policies, whose /user answers at once.
start_tollgate api 'policies = []'
api=$port

# start_nginx NAME CONF: nginx on CONF (with docs/gateways' addresses moved), on a free port,
# which it sets in `port`.
start_nginx() {
  port=$(free_port); mkdir -p "$work/$1"
  sed -e "s/127.0.0.1:8000/127.0.0.1:$limiter/; s/127.0.0.1:9000/127.0.0.1:$api/; s/127.0.0.1:8080/127.0.0.1:$port/" \
    "$2" > "$work/$1/nginx.conf"
  "${pin_service[@]}" nginx -p "$work/$1" -c "$work/$1/nginx.conf" -g 'daemon off;' >"$work/$1.log" 2>&1 &
  pids+=("$!"); wait_port "$port" "$work/$1.log"
}
# The same server with the auth lines taken out: nginx passing straight to the API.
grep -v -e 'auth_request' -e 'error_page 403' -e '\$tg_' docs/gateways/nginx-403.conf > "$work/nginx-direct.conf"
start_nginx auth docs/gateways/nginx-403.conf; with_auth=$port
start_nginx direct "$work/nginx-direct.conf"; direct=$port

# rps NAME PORT SCRIPT: requests/s of one wrk run; fails unless every response was 200.
rps() {
  local out=$work/$1.wrk
  "${pin_load[@]}" wrk -t 1 -c "$connections" -d "$duration" -s "benches/$3" "http://127.0.0.1:$2" > "$out"
  if grep -q 'Non-2xx' "$out"; then echo "benches/gateway.sh: $1 answered non-2xx:" >&2; cat "$out" >&2; exit 1; fi
  awk '/^Requests\/sec:/ { print $2 }' "$out"
}

printf '%-40s %12s %12s %7s\n' "pair (baseline first)" "baseline/s" "measured/s" "ratio"
for round in $(seq "$rounds"); do
  user=$(rps "user $round" "$limiter" users.lua)
  check=$(rps "check $round" "$limiter" check.lua)
  printf '%-40s %12s %12s %7.2f\n' "/check against /user, round $round" "$user" "$check" \
    "$(awk -v a="$check" -v b="$user" 'BEGIN { print a / b }')"
  straight=$(rps "direct $round" "$direct" users.lua)
  through=$(rps "auth $round" "$with_auth" users.lua)
  printf '%-40s %12s %12s %7.2f\n' "nginx + forward-auth against nginx, round $round" "$straight" \
    "$through" "$(awk -v a="$through" -v b="$straight" 'BEGIN { print a / b }')"
done
