#!/usr/bin/env bash
# What one decision costs Redis, in instructions: the decide script (lua/*.lua, joined as
# src/store/redis/mod.rs joins them) run by a redis-server under valgrind's callgrind, each kind
# of call as a ratio to a PING measured the same way in the same run. callgrind counts
# instructions, not seconds, so the figures repeat from run to run whatever else the machine is
# doing: what the load benchmark cannot see through its noise, this can.
#
#   benches/script_cost.sh            3,000 calls per row
#   CALLS=500 benches/script_cost.sh  fewer (QUICK=1: 200, a smoke test that the calls succeed)
#
# Needs valgrind, redis-server and redis-benchmark (Debian: apt-get install valgrind
# redis-server redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

calls=${CALLS:-3000}
[ -n "${QUICK:-}" ] && calls=200
for tool in valgrind redis-server redis-cli redis-benchmark python3; do
  command -v "$tool" >/dev/null || { echo "benches/script_cost.sh: $tool is not on PATH (apt-get install valgrind redis-server redis-tools)" >&2; exit 2; }
done

work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
cat lua/fixed_window.lua lua/sliding_window.lua lua/token_bucket.lua lua/decide.lua > "$work/decide.lua"

# Each decision's ARGV (lua/decide.lua): its number of policies, then per policy algorithm,
# limit, window_ms, cost, emission_us, capacity_us, receipt. Limits no call reaches, so every
# decision admits and writes.
fixed='1 fixed_window 1000000000 60000 1 0 0 0'
sliding='1 sliding_window 1000000 60000 1 0 0 0'
bucket='1 token_bucket 1000000 1000 1 1 1000000 0'
three='3 token_bucket 1000000 1000 1 1 1000000 0 sliding_window 1000000 60000 1 0 0 0 fixed_window 1000000000 86400000 1 0 0 0'

# instructions NAME [ARG...]: redis-server's instructions from startup to shutdown over a run of
# $calls calls of EVALSHA ARG..., or of PING for NAME ping, or of nothing for NAME empty. The
# script is loaded in every run, so what the runs share (startup, SCRIPT LOAD, shutdown) cancels
# against the empty run.
instructions() {
  local name=$1 port; shift
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" \
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --hz 1 >"$work/$name.log" 2>&1 &
  server=$!
  for _ in $(seq 600); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
  local sha
  sha=$(redis-cli -p "$port" SCRIPT LOAD "$(cat "$work/decide.lua")")
  if [ "$name" = ping ]; then
    redis-benchmark -p "$port" -n "$calls" -c 1 -q PING >"$work/$name.bench" 2>&1
  elif [ "$name" != empty ]; then
    # One call first, checked: its first decision must be admitted (an error or a denial
    # would measure the wrong thing).
    local reply
    reply=$(redis-cli -p "$port" EVALSHA "$sha" "$@")
    [[ $(head -1 <<<"$reply") == 1 ]] ||
      { echo "benches/script_cost.sh: $name: the script answered: $reply" >&2; exit 1; }
    # -r 100: keys name one of 100 callers, so nearly every decision updates a key that exists.
    redis-benchmark -p "$port" -n "$calls" -c 1 -r 100 -q EVALSHA "$sha" "$@" >"$work/$name.bench" 2>&1
  fi
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$server" || true
  server=""
  awk '/^(summary|totals):/ { print $2; exit }' "$work/$name.out"
}

# call_of N POLICIES ARGV: sets `args` to the EVALSHA arguments of a call of N decisions of
# POLICIES policies each, every decision with ARGV and its own caller, drawn by redis-benchmark
# (__rand_int__); '' is the clock (Redis's own).
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

echo "Redis instructions per call of the decide script: callgrind, $calls calls per row, keys of 100 callers"
empty=$(instructions empty)
ping=$(( ($(instructions ping) - empty) / calls ))
printf '%-30s %12s %8s %15s\n' call 'instr/call' ratio 'instr/decision'
printf '%-30s %12d %8.2f %15s\n' 'PING (baseline)' "$ping" 1 -
# row NAME DECISIONS POLICIES ARGV: a call of DECISIONS decisions of POLICIES policies each.
row() {
  local name=$1 n=$2 per
  call_of "$n" "$3" "$4"
  per=$(( ($(instructions "$name" "${args[@]}") - empty) / calls ))
  printf '%-30s %12d %8.2f %15d\n' "$name" "$per" "$(awk -v a="$per" -v b="$ping" 'BEGIN { print a / b }')" $((per / n))
}
row '1 decision, fixed window' 1 1 "$fixed"
row '8 decisions, fixed window' 8 1 "$fixed"
row '32 decisions, fixed window' 32 1 "$fixed"
row '1 decision, sliding window' 1 1 "$sliding"
row '1 decision, token bucket' 1 1 "$bucket"
row '1 decision, three policies' 1 3 "$three"
row '8 decisions, three policies' 8 3 "$three"
