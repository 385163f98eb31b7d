#!/usr/bin/env bash
# The benchmark of Envoy's rate limit service, each figure a ratio to a baseline run in the same run:
#   1. ShouldRateLimit over gRPC (benches/rls_load.rs) against /check under wrk: one tollgate,
#      one Redis, the same decisions (one fixed window per user, 10,000 users, every one
#      admitted), decisions/s;
#   2. Envoy with its rate limit filter asking that tollgate (docs/gateways/envoy.yaml) against
#      the same Envoy without the filter, requests/s through Envoy under wrk.
# Each run also shows how busy each core was and what CPU time a request cost tollgate and Envoy.
# Starts its own redis-server, tollgates and Envoys; needs wrk, redis-server and envoy.
#
#   benches/rls.sh             10 s per run; ROUNDS=3 alternates each pair three times
#   QUICK=1 benches/rls.sh     2 s per run: a smoke test of the answers, no speed
#   CONCURRENCY ("32 256"): the first pair is measured at each, as wrk's connections and as
#   the gRPC callers; Envoy's pair at the first; GRPC_CONNECTIONS (1): the HTTP/2 connections
#   the gRPC callers share
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-10s}
[ -n "${QUICK:-}" ] && duration=2s
rounds=${ROUNDS:-1}
read -r -a concurrency <<< "${CONCURRENCY:-32 256}"
grpc_connections=${GRPC_CONNECTIONS:-1}
for tool in wrk redis-server envoy; do
  command -v "$tool" >/dev/null || { echo "benches/rls.sh: $tool is not on PATH" >&2; exit 2; }
done
cargo build --release --quiet --bins
# The load client's own binary, so that cargo is not part of what a run measures.
client=$(cargo bench --quiet --no-run --bench rls_load --message-format=json \
  | sed -n 's/.*"executable":"\([^"]*rls_load[^"]*\)".*/\1/p')
[ -x "$client" ] || { echo "benches/rls.sh: benches/rls_load.rs did not build" >&2; exit 1; }
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
limiter=$port; limiter_pid=${pids[-1]}
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
start_envoy filter docs/gateways/envoy.yaml; with_filter=$port; filter_pid=${pids[-1]}
start_envoy direct "$work/envoy-direct.yaml"; direct=$port; direct_pid=${pids[-1]}

# What each run reports, as one line: requests (or decisions) per second; how busy CPU 0 (the
# services) and CPU 1 (the load and Redis) were, which says whether the service's core was the
# one that ran out; and the CPU time per request, in microseconds, of the tollgate deciding and
# of the Envoy in the run, if any, read from /proc, and of the load generator (wrk or rls_load),
# from `times`: what a request costs each, whoever ran out.
tick_us=$((1000000 / $(getconf CLK_TCK)))
# cores: busy and total ticks of CPU 0 and CPU 1 so far.
cores() { awk '/^cpu[01] / { t = 0; for (i = 2; i <= NF; i++) t += $i; printf "%d %d ", t - $5 - $6, t }' /proc/stat; }
# ticks PID: the CPU ticks (user and system) the process has used so far.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# children FILE: the CPU seconds this shell's finished children have used, from `times` in FILE.
children() { awk 'NR == 2 { n = split($0, t, /[ms ]+/); print t[1] * 60 + t[2] + t[3] * 60 + t[4] }' "$1"; }

# measure NAME ENVOY_PID COMMAND...: runs COMMAND, which writes the number of requests it made
# to $work/NAME.count and its duration in seconds to $work/NAME.seconds, and prints
# "per_second cpu0% cpu1% limiter_us envoy_us load_us" ("-" for no Envoy).
measure() {
  local name=$1 envoy=$2; shift 2
  local c0 l0 e0=0 c1 l1 e1=0
  times > "$work/$name.times0"
  c0=$(cores); l0=$(ticks "$limiter_pid"); [ "$envoy" != - ] && e0=$(ticks "$envoy")
  "$@"
  c1=$(cores); l1=$(ticks "$limiter_pid"); [ "$envoy" != - ] && e1=$(ticks "$envoy")
  times > "$work/$name.times1"
  local n seconds
  n=$(cat "$work/$name.count"); seconds=$(cat "$work/$name.seconds")
  awk -v n="$n" -v s="$seconds" -v tick="$tick_us" -v l="$((l1 - l0))" -v e="$((e1 - e0))" \
    -v envoy="$envoy" -v before="$c0" -v after="$c1" \
    -v load0="$(children "$work/$name.times0")" -v load1="$(children "$work/$name.times1")" 'BEGIN {
      split(before, b, " "); split(after, a, " ")
      printf "%.0f %.0f%% %.0f%% %.1f ", n / s, 100 * (a[1] - b[1]) / (a[2] - b[2]),
        100 * (a[3] - b[3]) / (a[4] - b[4]), l * tick / n
      if (envoy == "-") printf "- "; else printf "%.1f ", e * tick / n
      printf "%.1f\n", (load1 - load0) * 1e6 / n }'
}

# wrk_run NAME PORT SCRIPT CONNECTIONS: one wrk run; fails unless every response was 200.
wrk_run() {
  local out=$work/$1.wrk
  "${pin_load[@]}" wrk -t 1 -c "$4" -d "$duration" -s "benches/$3" "http://127.0.0.1:$2" > "$out"
  if grep -q 'Non-2xx' "$out"; then echo "benches/rls.sh: $1 answered non-2xx:" >&2; cat "$out" >&2; exit 1; fi
  # "  123456 requests in 10.00s, …"
  awk '/ requests in / { print $1 }' "$out" > "$work/$1.count"
  awk '/ requests in / { sub(/s,$/, "", $4); print $4 }' "$out" > "$work/$1.seconds"
}

# grpc_run NAME CALLERS: one rls_load run over GRPC_CONNECTIONS HTTP/2 connections (1, as one
# Envoy worker keeps); it fails unless every answer was OK.
grpc_run() {
  RLS_ADDR=127.0.0.1:$rls DURATION=${duration%s} CALLERS=$2 CONNECTIONS=$grpc_connections \
    "${pin_load[@]}" "$client" > "$work/$1.grpc" 2>&1 \
    || { echo "benches/rls.sh: $1 failed:" >&2; cat "$work/$1.grpc" >&2; exit 1; }
  sed -n 's/^rls_load: decisions=\([0-9]*\) .*/\1/p' "$work/$1.grpc" > "$work/$1.count"
  sed -n 's/^rls_load: .* seconds=\([0-9.]*\) .*/\1/p' "$work/$1.grpc" > "$work/$1.seconds"
}

# row LABEL BASELINE MEASURED: one line of the table, from two lines of measure.
row() {
  local b m; read -r -a b <<< "$2"; read -r -a m <<< "$3"
  printf '%-40s %9s %9s %6.2f %9s %9s %13s %13s %13s\n' "$1" "${b[0]}" "${m[0]}" \
    "$(awk -v a="${m[0]}" -v b="${b[0]}" 'BEGIN { print a / b }')" "${b[1]}/${b[2]}" "${m[1]}/${m[2]}" \
    "${b[3]} / ${m[3]}" "${b[4]} / ${m[4]}" "${b[5]} / ${m[5]}"
}
printf '%-40s %9s %9s %6s %9s %9s %13s %13s %13s\n' "pair (baseline first)" "base/s" "meas/s" "ratio" \
  "CPU0/1" "CPU0/1" "tollgate us" "Envoy us" "load us"
for round in $(seq "$rounds"); do
  for n in "${concurrency[@]}"; do
    check=$(measure "check-$n-$round" - wrk_run "check-$n-$round" "$limiter" check.lua "$n")
    should=$(measure "grpc-$n-$round" - grpc_run "grpc-$n-$round" "$n")
    row "gRPC against /check, $n at once, r$round" "$check" "$should"
  done
  n=${concurrency[0]}
  straight=$(measure "direct-$round" "$direct_pid" wrk_run "direct-$round" "$direct" users.lua "$n")
  through=$(measure "filter-$round" "$filter_pid" wrk_run "filter-$round" "$with_filter" users.lua "$n")
  row "Envoy + filter against Envoy, r$round" "$straight" "$through"
done
