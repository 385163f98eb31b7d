#!/usr/bin/env bash
# The load benchmark: tollgate under wrk, each scenario as a ratio to a no-limiter baseline
# measured in the same run. Starts its own redis-server and tollgate processes; needs wrk
# (Debian: apt-get install wrk) and redis-server.
#
#   bench/load.sh            10 s per scenario
#   QUICK=1 bench/load.sh    2 s per scenario: a smoke test of every scenario's status codes
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-10s}
[ -n "${QUICK:-}" ] && duration=2s
threads=${THREADS:-1}
connections=${CONNECTIONS:-32}
for tool in wrk redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "bench/load.sh: $tool is not on PATH (apt-get install wrk redis-server)" >&2; exit 2; }
done

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/tollgate
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_port PORT [LOG]: waits up to 10 s for a listener, showing LOG if none comes.
wait_port() {
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "bench/load.sh: nothing listens on :$1" >&2
  [ -n "${2:-}" ] && cat "$2" >&2
  exit 1
}

# Two cores: tollgate on CPU 0, wrk and Redis on CPU 1, so the service under test has a core.
pin_service="taskset -c 0"; pin_load="taskset -c 1"
command -v taskset >/dev/null || { pin_service=""; pin_load=""; }

redis_port=$(free_port)
$pin_load redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!); wait_port "$redis_port"

# EVALSHA calls: round trips. (INFO commandstats also counts the GET, SET and TIME a script runs
# inside its one call, so the total over all commands would overstate the round trips.)
redis_calls() { redis-cli -p "$redis_port" INFO commandstats | awk -F'[=,:]' '/^cmdstat_evalsha:/ { n += $3 } END { print n + 0 }'; }

# scenario NAME TOML SCRIPT DENIALS: runs tollgate with TOML and wrk with SCRIPT; prints one
# table row; fails unless the responses were all 200 (DENIALS=none) or mostly 429 (DENIALS=most).
baseline_rps=""
scenario() {
  local name=$1 toml=$2 script=$3 denials=$4 port
  port=$(free_port)
  printf 'listen = "127.0.0.1:%s"\n%s\n' "$port" "$toml" > "$work/$name.toml"
  RUST_LOG=warn $pin_service "$bin" --config "$work/$name.toml" >"$work/$name.log" 2>&1 &
  local pid=$!; pids+=($pid); wait_port "$port" "$work/$name.log"
  local before; before=$(redis_calls)
  $pin_load wrk -t "$threads" -c "$connections" -d "$duration" --latency -s "bench/$script" \
    "http://127.0.0.1:$port" > "$work/$name.wrk"
  local after; after=$(redis_calls)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local rps requests p50 p99 non2xx
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$work/$name.wrk")
  requests=$(awk '/requests in/ { print $1 }' "$work/$name.wrk")
  p50=$(awk '$1 == "50%" { print $2 }' "$work/$name.wrk")
  p99=$(awk '$1 == "99%" { print $2 }' "$work/$name.wrk")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' "$work/$name.wrk"); non2xx=${non2xx:-0}
  [ -z "$baseline_rps" ] && baseline_rps=$rps
  local ratio per_request
  ratio=$(awk -v a="$rps" -v b="$baseline_rps" 'BEGIN { printf "%.2f", a / b }')
  per_request=$(awk -v a="$after" -v b="$before" -v n="$requests" 'BEGIN { printf "%.3f", (a - b) / n }')
  printf '%-34s %10s %6s %9s %9s %9s %10s\n' "$name" "$rps" "$ratio" "$p50" "$p99" "$non2xx" "$per_request"
  if [ "$requests" -lt 100 ]; then echo "bench/load.sh: $name served only $requests requests" >&2; exit 1; fi
  case $denials in
    none) [ "$non2xx" -eq 0 ] || { echo "bench/load.sh: $name: $non2xx responses were not 200" >&2; exit 1; } ;;
    most) [ "$non2xx" -gt $((requests / 2)) ] || { echo "bench/load.sh: $name: only $non2xx denials" >&2; exit 1; } ;;
  esac
}

redis_url="redis://127.0.0.1:$redis_port"
echo "tollgate load benchmark: wrk -t$threads -c$connections -d$duration; ${pin_service:+tollgate pinned to CPU 0, wrk and Redis to CPU 1}"
printf '%-34s %10s %6s %9s %9s %9s %10s\n' scenario 'req/s' ratio p50 p99 non-2xx 'evalsha/req'
scenario "1 no limiter (baseline)" 'limits = []' users.lua none
scenario "2 memory, 10k users admitted" '[[limits]]
name = "per_minute"
limit = 1000000000
window = "1m"' users.lua none
scenario "3 redis, 10k users admitted" "[redis]
url = \"$redis_url\"
[[limits]]
name = \"per_minute\"
limit = 1000000000
window = \"1m\"" users.lua none
scenario "4 redis, one hot user denied" "[redis]
url = \"$redis_url\"
[[limits]]
name = \"per_minute\"
limit = 3
window = \"1h\"" hot.lua most
scenario "5 redis, three policies" "[redis]
url = \"$redis_url\"
[[limits]]
name = \"per_second\"
algorithm = \"token_bucket\"
limit = 1000000
window = \"1s\"
[[limits]]
name = \"per_minute\"
algorithm = \"sliding_window\"
limit = 1000000
window = \"1m\"
[[limits]]
name = \"per_day\"
limit = 1000000000
window = \"1d\"" users.lua none
echo "scenario 6 (Redis Cluster) is not in this script yet."
