#!/usr/bin/env bash
# What one decision costs Redis: the decide script (lua/*.lua, joined as src/store/redis/mod.rs
# joins them), each kind of call against two floors written in benches/floors/, in one run.
#
# Time (the default): Redis's own CPU time per call, `usec` of `INFO commandstats` after
# `CONFIG RESETSTAT`, with redis-benchmark sending 32 connections' worth of calls, 16 in flight
# on each, keys drawn from 100,000 callers, every decision admitted. Each row is a µs per
# decision and its ratio to a floor measured in the same round:
#   floor A (floors/incr_pexpire.lua): INCR, then PEXPIRE when the count is new; the original
#     example's job made atomic, the floor of the fixed window, which can count as it does;
#   floor B (floors/time_get_set.lua): TIME, GET, SET … PX; the least a stateful algorithm on
#     Redis's clock does for one key, the floor of the others and of shared calls.
#
# Instructions (INSTRUCTIONS=1): redis-server under valgrind's callgrind, the user-space
# instructions it executes per call, as a ratio to a PING measured the same way in the same run.
# They repeat within about 1% from run to run however loaded the machine is: what the timed
# rows cannot see through their noise, this can, and it says where a change went.
#
#   benches/script_cost.sh                  3 rounds of 300,000 calls per row (ROUNDS, CALLS)
#   INSTRUCTIONS=1 benches/script_cost.sh   3,000 calls per row under callgrind
#   QUICK=1 ...                             a smoke test that every call succeeds, no figure
#
# Needs redis-server and redis-benchmark, and valgrind for INSTRUCTIONS=1 (Debian: apt-get
# install redis-server redis-tools valgrind).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

instructions=${INSTRUCTIONS:-}
if [ -n "$instructions" ]; then calls=${CALLS:-3000}; else calls=${CALLS:-300000}; fi
rounds=${ROUNDS:-3}
[ -n "${QUICK:-}" ] && { calls=200; rounds=1; }
tools=(redis-server redis-cli redis-benchmark)
[ -n "$instructions" ] && tools+=(valgrind)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "benches/script_cost.sh: $tool is not on PATH (apt-get install redis-server redis-tools valgrind)" >&2; exit 2; }
done

work=$(mktemp -d)
server=""
# Waits for the server it killed, so no redis-server (or valgrind) outlives the script.
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cat lua/fixed_window.lua lua/sliding_window.lua lua/token_bucket.lua lua/decide.lua > "$work/decide.lua"

# Each decision's ARGV (lua/decide.lua): its number of policies, then per policy algorithm,
# cost, limit and window_ms (emission_us and capacity_us for token_bucket), shadow. Limits no
# run reaches, so every decision admits and writes; day-long windows, so no key expires during
# a run.
fixed='1 fixed_window 1 1000000000 86400000 0'
sliding='1 sliding_window 1 1000000000 86400000 0'
bucket='1 token_bucket 1 1 1000000 0'
three='3 token_bucket 1 1 1000000 0 sliding_window 1 1000000000 86400000 0 fixed_window 1 1000000000 86400000 0'

# start_server [WRAPPER...]: a redis-server listening on a socket in $work only, so no other
# process can take its place or be benchmarked by mistake; sets `socket`.
start_server() {
  socket="$work/redis.sock"
  rm -f "$socket"
  "$@" redis-server --port 0 --unixsocket "$socket" --save '' --appendonly no --hz 1 \
    >"$work/redis.log" 2>&1 &
  server=$!
  local waited=0
  until redis-cli -s "$socket" PING >/dev/null 2>&1; do
    kill -0 "$server" 2>/dev/null || { echo "benches/script_cost.sh: redis-server exited" >&2; cat "$work/redis.log" >&2; exit 1; }
    waited=$((waited + 1))
    [ "$waited" -le 1200 ] || { echo "benches/script_cost.sh: redis-server did not answer in 120 s" >&2; exit 1; }
    sleep 0.1
  done
}

stop_server() {
  redis-cli -s "$socket" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$server" || true
  server=""
}

# load FILE: sets `sha` to FILE's script, loaded.
load() {
  sha=$(redis-cli -s "$socket" SCRIPT LOAD "$(cat "$1")")
  [[ $sha =~ ^[0-9a-f]{40}$ ]] || { echo "benches/script_cost.sh: SCRIPT LOAD $1 answered: $sha" >&2; exit 1; }
}

# check_admitted NAME POLICIES ARG...: one call of EVALSHA ARG..., whose every decision must be
# admitted: an error or a denial would measure the wrong thing. Each decision's part of the
# reply is its allowed flag, then four values per policy.
check_admitted() {
  local name=$1 policies=$2 reply
  shift 2
  reply=$(redis-cli -s "$socket" EVALSHA "$@")
  awk -v step=$((1 + 4 * policies)) '(NR - 1) % step == 0 && $0 != "1" { bad = 1 } END { exit (bad || NR == 0) }' <<<"$reply" ||
    { echo "benches/script_cost.sh: $name: not every decision was admitted: $reply" >&2; exit 1; }
}

# bench NAME RANGE CONNECTIONS PIPELINE COMMAND...: redis-benchmark's $calls calls of COMMAND,
# each {__rand_int__} drawn from RANGE values; fails on any error.
bench() {
  local name=$1 range=$2 connections=$3 pipeline=$4
  shift 4
  "${pin_load[@]}" redis-benchmark -s "$socket" -n "$calls" -c "$connections" -P "$pipeline" \
    -r "$range" -q "$@" >"$work/$name.bench" 2>&1
  if grep -qi 'err' "$work/$name.bench"; then
    echo "benches/script_cost.sh: $name: redis-benchmark reported errors" >&2; cat "$work/$name.bench" >&2; exit 1
  fi
}

# call_of N POLICIES ARGV: sets `args` to the EVALSHA arguments (after the sha) of a call of N
# decisions of POLICIES policies each, every decision with ARGV. redis-benchmark draws each
# {__rand_int__} on its own, so the keys of one decision are different callers' here, which
# changes nothing on a single Redis; '' is the clock (Redis's own).
call_of() {
  local n=$1 policies=$2 d p
  args=($((n * policies)))
  for d in $(seq "$n"); do
    for p in $(seq "$policies"); do args+=("tollgate:{__rand_int__$d}:p$p"); done
  done
  args+=('' decide)
  # shellcheck disable=SC2206 # ARGV's words, split on purpose
  for d in $(seq "$n"); do args+=($3); done
}

pin_redis=(); pin_load=()
if [ -z "$instructions" ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  # Redis on one core, the load on another, so that the two never take turns on one.
  pin_redis=(taskset -c 0); pin_load=(taskset -c 1)
fi

if [ -n "$instructions" ]; then
  # measure NAME POLICIES [ARG...]: sets `counted` to redis-server's instructions from startup
  # to shutdown over $calls calls of EVALSHA ARG..., of PING for NAME ping, or of nothing for
  # NAME empty. The script is loaded in every run, so what the runs share (startup, SCRIPT
  # LOAD, shutdown) cancels against the empty run.
  measure() {
    local name=$1 policies=$2
    shift 2
    start_server valgrind --tool=callgrind --callgrind-out-file="$work/$name.out"
    load "$work/decide.lua"
    case $name in
      empty) ;;
      ping) bench "$name" 100 1 1 PING ;;
      incr_pexpire | time_get_set)
        load "benches/floors/$name.lua"
        bench "$name" 100 1 1 EVALSHA "$sha" "$@"
        ;;
      *)
        check_admitted "$name" "$policies" "$sha" "$@"
        # -r 100: each key's {__rand_int__} is one of 100 values, so nearly every decision
        # updates a key that exists.
        bench "$name" 100 1 1 EVALSHA "$sha" "$@"
        ;;
    esac
    stop_server
    counted=$(awk '/^(summary|totals):/ { print $2; found = 1; exit } END { exit !found }' "$work/$name.out")
  }
  echo "Redis instructions per call of the decide script: callgrind, $calls calls per row, keys drawn from 100 per place in a call"
  measure empty 0
  empty=$counted
  measure ping 0
  ping=$(((counted - empty) / calls))
  printf '%-30s %12s %8s %15s\n' call 'instr/call' ratio 'instr/decision'
  printf '%-30s %12d %8.2f %15s\n' 'PING (baseline)' "$ping" 1 -
  # row NAME DECISIONS POLICIES ARGV: a call of DECISIONS decisions of POLICIES policies each.
  row() {
    local name=$1 n=$2 per
    call_of "$n" "$3" "$4"
    measure "$name" "$3" "${args[@]}"
    per=$(((counted - empty) / calls))
    printf '%-30s %12d %8.2f %15d\n' "$name" "$per" "$(awk -v a="$per" -v b="$ping" 'BEGIN { print a / b }')" $((per / n))
  }
  # floor NAME LABEL: a floor's script, on one key drawn from 100.
  floor() {
    local per
    measure "$1" 0 1 'floor:{__rand_int__}' 86400000
    per=$(((counted - empty) / calls))
    printf '%-30s %12d %8.2f %15d\n' "$2" "$per" "$(awk -v a="$per" -v b="$ping" 'BEGIN { print a / b }')" "$per"
  }
  floor incr_pexpire 'floor A (INCR, PEXPIRE)'
  floor time_get_set 'floor B (TIME, GET, SET)'
  row '1 decision, fixed window' 1 1 "$fixed"
  row '8 decisions, fixed window' 8 1 "$fixed"
  row '32 decisions, fixed window' 32 1 "$fixed"
  row '1 decision, sliding window' 1 1 "$sliding"
  row '1 decision, token bucket' 1 1 "$bucket"
  row '1 decision, three policies' 1 3 "$three"
  row '8 decisions, three policies' 8 3 "$three"
  exit 0
fi

# usec NAME DECISIONS SCRIPT ARG...: Redis's µs per decision over $calls calls of SCRIPT with
# ARG... (after the sha), from an empty database; sets `per`.
usec() {
  local name=$1 n=$2 script=$3 stats
  shift 3
  redis-cli -s "$socket" FLUSHALL >/dev/null
  load "$script"
  redis-cli -s "$socket" CONFIG RESETSTAT >/dev/null
  bench "$name" 100000 32 16 EVALSHA "$sha" "$@"
  stats=$(redis-cli -s "$socket" INFO commandstats | tr -d '\r')
  # cmdstat_evalsha:calls=300000,usec=2764112,usec_per_call=9.21,...
  per=$(awk -F '[=,]' -v n="$n" '/^cmdstat_evalsha:/ { print $4 / $2 / n; found = 1 } END { exit !found }' <<<"$stats") ||
    { echo "benches/script_cost.sh: $name: no EVALSHA in INFO commandstats" >&2; exit 1; }
}

# Each row: name, decisions per call, the floor it is a ratio to, the decisions' ARGV, and their
# policies each.
rows=(
  "fixed_window, 1 a call|1|A|$fixed|1"
  "sliding_window, 1 a call|1|B|$sliding|1"
  "token_bucket, 1 a call|1|B|$bucket|1"
  "fixed_window, 8 a call|8|B|$fixed|1"
  "sliding_window, 8 a call|8|B|$sliding|1"
  "token_bucket, 8 a call|8|B|$bucket|1"
  "3 policies, 1 a call, per policy|1|B|$three|3"
)
start_server "${pin_redis[@]}"
echo "Redis µs per decision: INFO commandstats, $calls calls per row, 32 connections × 16 in flight, keys from 100,000 callers"
printf '%-6s %-34s %10s %8s\n' round call 'µs/dec' ratio
for round in $(seq "$rounds"); do
  usec floor-a 1 benches/floors/incr_pexpire.lua 1 'floor:{__rand_int__}' 86400000
  floor_a=$per
  usec floor-b 1 benches/floors/time_get_set.lua 1 'floor:{__rand_int__}' 86400000
  floor_b=$per
  printf '%-6s %-34s %10.2f %8s\n' "$round" 'floor A (INCR, PEXPIRE)' "$floor_a" '1 A'
  printf '%-6s %-34s %10.2f %8s\n' "$round" 'floor B (TIME, GET, SET)' "$floor_b" '1 B'
  for row in "${rows[@]}"; do
    IFS='|' read -r name n floor argv policies <<<"$row"
    call_of "$n" "$policies" "$argv"
    load "$work/decide.lua"
    [ "$round" = 1 ] && check_admitted "$name" "$policies" "$sha" "${args[@]//__rand_int__/}"
    # Per policy, each the work of one key: the row of three policies is divided by three.
    usec "$name" $((n * policies)) "$work/decide.lua" "${args[@]}"
    if [ "$floor" = A ]; then base=$floor_a; else base=$floor_b; fi
    printf '%-6s %-34s %10.2f %8s\n' "$round" "$name" "$per" \
      "$(awk -v a="$per" -v b="$base" 'BEGIN { printf "%.2f %s", a / b, "'"$floor"'" }')"
  done
done
stop_server
