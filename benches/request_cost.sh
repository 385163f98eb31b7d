#!/usr/bin/env bash
# The instructions tollgate runs per request, counted by valgrind's callgrind: deterministic where
# the load benchmark's timings are noisy, so a small change to the hot path can be measured.
# Needs valgrind (Debian: apt-get install valgrind), redis-server and python3.
#
#   benches/request_cost.sh              the release binary, built first
#   benches/request_cost.sh BIN...       each binary in turn (an A/B: build each variant, copy
#                                        its target/release/tollgate aside, pass the copies)
#   QUICK=1 benches/request_cost.sh      2,000 requests per row instead of 20,000
#
# Each row serves the requests one at a time over one keep-alive connection, after 2,000 to warm
# up, and prints the Ir (instructions executed) of that window minus an idle window as long,
# divided by the requests: user-space instructions only, not the kernel's socket work.
# - baseline: `policies = []`, as load.sh's scenario 1;
# - admitted: the memory store, every request admitted, as scenario 2 (100 callers, not 10,000:
#   the store's sweeper ticks on a timer, and fewer entries keep its share of the window small);
# - redis: Redis, every request admitted, 10,000 callers, as scenario 3: one EVALSHA a request;
# - denied: Redis, one caller over its limit, answered from the over-limit cache, as scenario 4.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${REQUESTS:-20000}
[ -n "${QUICK:-}" ] && requests=2000
for tool in valgrind callgrind_control redis-server python3; do
  command -v "$tool" >/dev/null || { echo "benches/request_cost.sh: $tool is not on PATH (apt-get install valgrind redis-server)" >&2; exit 2; }
done
if [ $# -eq 0 ]; then
  cargo build --release --quiet --bin tollgate
  set -- "${CARGO_TARGET_DIR:-$PWD/target}/release/tollgate"
fi

. benches/lib.sh

# send PORT COUNT FIRST STATUS [CALLER]: COUNT requests, callers user-FIRST... in turn over 100
# (USERS, when set; or CALLER each time); fails unless every response has STATUS.
send() {
  python3 - "$@" <<'EOF'
import http.client, os, sys
port, count, first, status = (int(a) for a in sys.argv[1:5])
caller = sys.argv[5] if len(sys.argv) > 5 else None
users = int(os.environ.get("USERS") or 100)
connection = http.client.HTTPConnection("127.0.0.1", port)
for i in range(first, first + count):
    connection.request("GET", "/user", headers={"X-User": caller or f"user-{i % users}"})
    response = connection.getresponse()
    response.read()
    if response.status != status:
        sys.exit(f"benches/request_cost.sh: answered {response.status}, not {status}")
EOF
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=("$!"); wait_port "$redis_port"

admit_all='[[policies]]
name = "per_minute"
limit = 1000000000
window = "1m"'

# row BIN NAME STATUS CALLER TOML [USERS]: prints one row.
row() {
  local bin=$1 name=$2 status=$3 caller=$4 toml=$5 port vg
  export USERS=${6:-}
  port=$(free_port)
  printf 'listen = "127.0.0.1:%s"\n%s\n' "$port" "$toml" > "$work/$name.toml"
  rm -f "$work"/cg.out.*
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/cg.out.%p" "$bin" \
    --config "$work/$name.toml" >"$work/$name.log" 2>&1 &
  vg=$!; pids+=("$vg"); wait_port "$port"
  # The hot caller's first three are admitted; the rest of the warm-up fills the cache.
  if [ -n "$caller" ]; then send "$port" 3 0 200 "$caller"; send "$port" 1997 0 "$status" "$caller"
  else send "$port" 2000 0 "$status"; fi
  callgrind_control -z "$vg" >/dev/null 2>&1
  local start end
  start=$(date +%s.%N)
  send "$port" "$requests" 2000 "$status" $caller
  end=$(date +%s.%N)
  callgrind_control -d "$vg" >/dev/null 2>&1
  sleep "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')"
  callgrind_control -d "$vg" >/dev/null 2>&1
  kill "$vg"; wait "$vg" 2>/dev/null || true
  local busy idle
  busy=$(awk '/^summary:/ { print $2 }' "$work"/cg.out.*.1)
  idle=$(awk '/^summary:/ { print $2 }' "$work"/cg.out.*.2)
  printf '%-40s %-9s %8d %12.0f\n' "$bin" "$name" "$requests" "$(awk -v b="$busy" -v i="$idle" -v n="$requests" 'BEGIN { print (b - i) / n }')"
}

echo "tollgate instructions per request: callgrind, $requests requests per row, one connection"
printf '%-40s %-9s %8s %12s\n' binary scenario requests 'Ir/request'
binaries=0
for bin; do
  binaries=$((binaries + 1))
  row "$bin" baseline 200 "" 'policies = []'
  row "$bin" admitted 200 "" "$admit_all"
  row "$bin" redis 200 "" "[redis]
url = \"redis://127.0.0.1:$redis_port\"
$admit_all" 10000
  # A caller of its own per binary: the previous one's stays over its limit in Redis for an hour.
  row "$bin" denied 429 "hot-$binaries" "[redis]
url = \"redis://127.0.0.1:$redis_port\"
[[policies]]
name = \"per_minute\"
limit = 3
window = \"1h\""
done
