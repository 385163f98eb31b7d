#!/usr/bin/env bash
# The benchmark of Envoy's rate limit service, each figure a ratio to a baseline run in the same run:
#   1. ShouldRateLimit over gRPC (benches/rls_load.rs) against /check under wrk: one tollgate,
#      one Redis, the same decisions (one fixed window per user, 10,000 users, every one
#      admitted), decisions/s;
#   2. Envoy with its rate limit filter asking that tollgate (docs/gateways/envoy.yaml) against
#      the same Envoy without the filter, requests/s through Envoy under wrk.
# Starts its own redis-server, tollgates and Envoys; needs wrk, redis-server and envoy.
#
#   benches/rls.sh             10 s per run; ROUNDS=3 alternates each pair three times
#   QUICK=1 benches/rls.sh     2 s per run: a smoke test of the answers, no speed
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-10s}
[ -n "${QUICK:-}" ] && duration=2s
rounds=${ROUNDS:-1}
connections=${CONNECTIONS:-32}
for tool in wrk redis-server envoy; do
  command -v "$tool" >/dev/null || { echo "benches/rls.sh: $tool is not on PATH" >&2; exit 2; }
done
cargo build --release --quiet --bins
cargo bench --quiet --no-run --bench rls_load
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/tollgate
. benches/lib.sh
# Two cores: the services under test on CPU 0, the load and Redis on CPU 1.
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

# The descriptor docs/gateways/envoy.yaml sends for GET /user, with a limit never reached.
cat > "$work/ratelimit.yaml" <<'EOF'
domain: api
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 1000000000}
EOF
# The same decision both ways: a fixed window of an hour per user, in one Redis call.
rls=$(free_port)
start_tollgate limiter "[redis]
url = \"redis://127.0.0.1:$redis_port\"
[identity]
trusted_proxies = [\"127.0.0.1/32\"]
[forward_auth]
path = \"/check\"
deny_status = 403
[[policies]]
name = \"per_user\"
algorithm = \"fixed_window\"
limit = 1000000000
window = \"1h\"
[rls]
listen = \"127.0.0.1:$rls\"
config = [\"$work/ratelimit.yaml\"]"
limiter=$port
wait_port "$rls" "$work/limiter.log"
# The API behind Envoy: a tollgate with no policies, whose /user answers at once.
start_tollgate api 'policies = []'
api=$port

# start_envoy NAME CONF: Envoy on CONF (with docs/gateways' ports moved), on a free port, which
# it sets in `port`. One worker thread, as nginx has one worker in benches/gateway.sh.
start_envoy() {
  port=$(free_port); mkdir -p "$work/$1"
  sed -e "s/port_value: 8081/port_value: $rls/; s/port_value: 9000/port_value: $api/; s/port_value: 8080/port_value: $port/" \
    "$2" > "$work/$1/envoy.yaml"
  "${pin_service[@]}" envoy -c "$work/$1/envoy.yaml" --disable-hot-restart --concurrency 1 \
    --log-level warn >"$work/$1.log" 2>&1 &
  pids+=("$!"); wait_port "$port" "$work/$1.log"
}
# The same Envoy with the rate limit filter taken out: the routes' rate_limits then do nothing.
awk '/- name: envoy.filters.http.ratelimit/ { skip = 1 } /- name: envoy.filters.http.router/ { skip = 0 } !skip' \
  docs/gateways/envoy.yaml > "$work/envoy-direct.yaml"
! grep -q 'envoy.filters.http.ratelimit' "$work/envoy-direct.yaml" \
  || { echo "benches/rls.sh: the rate limit filter was not taken out" >&2; exit 1; }
start_envoy filter docs/gateways/envoy.yaml; with_filter=$port
start_envoy direct "$work/envoy-direct.yaml"; direct=$port

# rps NAME PORT SCRIPT: requests/s of one wrk run; fails unless every response was 200.
rps() {
  local out=$work/$1.wrk
  "${pin_load[@]}" wrk -t 1 -c "$connections" -d "$duration" -s "benches/$3" "http://127.0.0.1:$2" > "$out"
  if grep -q 'Non-2xx' "$out"; then echo "benches/rls.sh: $1 answered non-2xx:" >&2; cat "$out" >&2; exit 1; fi
  awk '/^Requests\/sec:/ { print $2 }' "$out"
}

# grpc NAME: decisions/s of one rls_load run, as many callers as wrk has connections; it fails
# unless every answer was OK.
grpc() {
  RLS_ADDR=127.0.0.1:$rls DURATION=${duration%s} CALLERS=$connections \
    "${pin_load[@]}" cargo bench --quiet --bench rls_load > "$work/$1.grpc" 2>&1 \
    || { echo "benches/rls.sh: $1 failed:" >&2; cat "$work/$1.grpc" >&2; exit 1; }
  sed -n 's/^rls_load: .*per_second=\([0-9]*\)$/\1/p' "$work/$1.grpc"
}

printf '%-40s %12s %12s %7s\n' "pair (baseline first)" "baseline/s" "measured/s" "ratio"
for round in $(seq "$rounds"); do
  check=$(rps "check $round" "$limiter" check.lua)
  should=$(grpc "grpc $round")
  printf '%-40s %12s %12s %7.2f\n' "gRPC against /check, round $round" "$check" "$should" \
    "$(awk -v a="$should" -v b="$check" 'BEGIN { print a / b }')"
  straight=$(rps "direct $round" "$direct" users.lua)
  through=$(rps "filter $round" "$with_filter" users.lua)
  printf '%-40s %12s %12s %7.2f\n' "Envoy + rate limit against Envoy, round $round" "$straight" \
    "$through" "$(awk -v a="$through" -v b="$straight" 'BEGIN { print a / b }')"
done
