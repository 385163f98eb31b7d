#!/usr/bin/env bash
# What one decision costs Redis, in instructions: the decide script (lua/*.lua, joined as
# src/store/redis/mod.rs joins them) run by a redis-server under valgrind's callgrind, each kind
# of call as a ratio to a PING measured the same way in the same run. callgrind counts the
# user-space instructions Redis executes (not the kernel's socket work, and not seconds), so
# the figures repeat within about 1% from run to run however loaded the machine is: what the
# load benchmark cannot see through its noise, this can.
#
#   benches/script_cost.sh            3,000 calls per row
#   CALLS=500 benches/script_cost.sh  fewer (QUICK=1: 200, a smoke test that the calls succeed)
#
# Needs valgrind, redis-server and redis-benchmark (Debian: apt-get install valgrind
# redis-server redis-tools).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

calls=${CALLS:-3000}
[ -n "${QUICK:-}" ] && calls=200
for tool in valgrind redis-server redis-cli redis-benchmark; do
  command -v "$tool" >/dev/null || { echo "benches/script_cost.sh: $tool is not on PATH (apt-get install valgrind redis-server redis-tools)" >&2; exit 2; }
done

work=$(mktemp -d)
server=""
# Waits for the server it killed, so no valgrind outlives the script.
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
# limit, window_ms, cost, emission_us, capacity_us, receipt, shadow. Limits no run reaches, so
# every decision admits and writes; day-long windows, so no key expires during a run.
fixed='1 fixed_window 1000000000 86400000 1 0 0 0 0'
sliding='1 sliding_window 1000000000 86400000 1 0 0 0 0'
bucket='1 token_bucket 1000000 1000 1 1 1000000 0 0'
three='3 token_bucket 1000000 1000 1 1 1000000 0 0 sliding_window 1000000000 86400000 1 0 0 0 0 fixed_window 1000000000 86400000 1 0 0 0 0'

# measure NAME POLICIES [ARG...]: sets `counted` to redis-server's instructions from startup to
# shutdown over a run of $calls calls of EVALSHA ARG..., of PING for NAME ping, or of nothing
# for NAME empty. The script is loaded in every run, so what the runs share (startup, SCRIPT
# LOAD, shutdown) cancels against the empty run. POLICIES is each decision's number of policies,
# to check that every decision of a call admits. The server listens on a socket in $work only,
# so no other process can take its place or be benchmarked by mistake.
measure() {
  local name=$1 policies=$2 socket="$work/$1.sock"
  shift 2
  valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" \
    redis-server --port 0 --unixsocket "$socket" --save '' --appendonly no --hz 1 \
    >"$work/$name.log" 2>&1 &
  server=$!
  local waited=0
  until redis-cli -s "$socket" PING >/dev/null 2>&1; do
    kill -0 "$server" 2>/dev/null || { echo "benches/script_cost.sh: $name: redis-server exited" >&2; cat "$work/$name.log" >&2; exit 1; }
    waited=$((waited + 1))
    [ "$waited" -le 1200 ] || { echo "benches/script_cost.sh: $name: redis-server under valgrind did not answer in 120 s" >&2; exit 1; }
    sleep 0.1
  done
  local sha
  sha=$(redis-cli -s "$socket" SCRIPT LOAD "$(cat "$work/decide.lua")")
  [[ $sha =~ ^[0-9a-f]{40}$ ]] || { echo "benches/script_cost.sh: SCRIPT LOAD answered: $sha" >&2; exit 1; }
  local command=()
  case $name in
    empty) ;;
    ping) command=(PING) ;;
    *)
      command=(EVALSHA "$sha" "$@")
      # One call first, checked: every decision of it must be admitted (an error or a denial
      # would measure the wrong thing). Each decision's part of the reply is its allowed flag,
      # then four values per policy.
      local reply
      reply=$(redis-cli -s "$socket" "${command[@]}")
      awk -v step=$((1 + 4 * policies)) '(NR - 1) % step == 0 && $0 != "1" { bad = 1 } END { exit (bad || NR == 0) }' <<<"$reply" ||
        { echo "benches/script_cost.sh: $name: not every decision was admitted: $reply" >&2; exit 1; }
      ;;
  esac
  if [ ${#command[@]} -gt 0 ]; then
    # -r 100: each key's {__rand_int__} is one of 100 values, so nearly every decision updates
    # a key that exists.
    redis-benchmark -s "$socket" -n "$calls" -c 1 -r 100 -q "${command[@]}" >"$work/$name.bench" 2>&1
    if grep -qi 'err' "$work/$name.bench"; then
      echo "benches/script_cost.sh: $name: redis-benchmark reported errors" >&2; cat "$work/$name.bench" >&2; exit 1
    fi
  fi
  redis-cli -s "$socket" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$server" || true
  server=""
  counted=$(awk '/^(summary|totals):/ { print $2; found = 1; exit } END { exit !found }' "$work/$name.out")
}

# call_of N POLICIES ARGV: sets `args` to the EVALSHA arguments of a call of N decisions of
# POLICIES policies each, every decision with ARGV. redis-benchmark draws each {__rand_int__}
# on its own, so the keys of one decision are different callers' here, which changes nothing
# on a single Redis; '' is the clock (Redis's own).
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
row '1 decision, fixed window' 1 1 "$fixed"
row '8 decisions, fixed window' 8 1 "$fixed"
row '32 decisions, fixed window' 32 1 "$fixed"
row '1 decision, sliding window' 1 1 "$sliding"
row '1 decision, token bucket' 1 1 "$bucket"
row '1 decision, three policies' 1 3 "$three"
row '8 decisions, three policies' 8 3 "$three"
