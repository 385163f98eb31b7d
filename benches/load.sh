#!/usr/bin/env bash
# The load benchmark: tollgate under wrk, each scenario as a ratio to a no-limiter baseline
# measured in the same run, then the p99 latency the limiter adds at half the maximum load.
# Starts its own redis-server, Redis Cluster and tollgate processes; needs wrk
# (Debian: apt-get install wrk) and redis-server (which brings redis-cli).
#
#   benches/load.sh            10 s per run (DURATION=3s for another length)
#   ROUNDS=3 benches/load.sh   every scenario three times, in turn, then the median of each
#                              figure: on a machine with noisy neighbours one run misleads
#   QUICK=1 benches/load.sh    2 s per run: a smoke test of every run's status codes, no speed
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-10s}
[ -n "${QUICK:-}" ] && duration=2s
rounds=${ROUNDS:-1}
threads=${THREADS:-1}
connections=${CONNECTIONS:-32}
for tool in wrk redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "benches/load.sh: $tool is not on PATH (apt-get install wrk redis-server)" >&2; exit 2; }
done

cargo build --release --quiet --bins
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/tollgate
. benches/lib.sh
# free_cluster_port: a free port P with P + 10000 free too, for a cluster node and its bus
# (redis-server refuses a cluster port above 55535).
free_cluster_port() {
  python3 -c '
import socket
while True:
    a, b = socket.socket(), socket.socket()
    a.bind(("127.0.0.1", 0))
    port = a.getsockname()[1]
    try:
        if port <= 55535:
            b.bind(("127.0.0.1", port + 10000))
            print(port)
            break
    except OSError:
        pass
    finally:
        a.close(); b.close()
'
}

# Two cores: tollgate on CPU 0; wrk, Redis and the cluster's nodes on CPU 1, so the service under
# test has a core.
pin_service=(taskset -c 0); pin_load=(taskset -c 1)
command -v taskset >/dev/null || { pin_service=(); pin_load=(); }

redis_port=$(free_port)
"${pin_load[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=("$!"); wait_port "$redis_port"

# Scenario 6's Redis Cluster: three primaries and no replicas. A replica only copies its
# primary's writes; it takes no part in a decision, and the benchmark measures the decisions.
cluster_ports=()
for _ in 1 2 3; do
  port=$(free_cluster_port)
  "${pin_load[@]}" redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "$work/nodes-$port.conf" --save '' --appendonly no >/dev/null &
  pids+=("$!"); wait_port "$port"
  cluster_ports+=("$port")
done
redis-cli --cluster create "${cluster_ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
  >"$work/cluster-create.log" 2>&1 || { cat "$work/cluster-create.log" >&2; exit 1; }
# Every node must see every slot covered before tollgate asks it for the slot map.
for port in "${cluster_ports[@]}"; do
  for _ in $(seq 400); do
    [[ $(redis-cli -p "$port" CLUSTER INFO) == *cluster_state:ok* ]] && continue 2
    sleep 0.05
  done
  echo "benches/load.sh: cluster node :$port is not cluster_state:ok after 20 s" >&2; exit 1
done

# redis_stats PORT...: EVALSHA calls and CPU seconds (used_cpu_sys + used_cpu_user), each
# summed over the given servers. EVALSHA calls are the round trips: INFO commandstats also
# counts the GET, SET and TIME a script runs inside its one call, so the total over all commands
# would overstate them.
redis_stats() {
  local port
  for port; do redis-cli -p "$port" INFO commandstats; redis-cli -p "$port" INFO cpu; done |
    awk -F'[=,:]' '/^cmdstat_evalsha:/ { n += $3 } /^used_cpu_(sys|user):/ { cpu += $2 }
      END { printf "%d %.6f\n", n, cpu }'
}

# start_tollgate NAME TOML: runs tollgate with TOML; sets tollgate_port and tollgate_pid.
start_tollgate() {
  local name=$1 toml=$2
  tollgate_port=$(free_port)
  printf 'listen = "127.0.0.1:%s"\n%s\n' "$tollgate_port" "$toml" > "$work/$name.toml"
  RUST_LOG=warn "${pin_service[@]}" "$bin" --config "$work/$name.toml" >"$work/$name.log" 2>&1 &
  tollgate_pid=$!; pids+=("$tollgate_pid"); wait_port "$tollgate_port" "$work/$name.log"
}
stop_tollgate() { kill "$tollgate_pid"; wait "$tollgate_pid" 2>/dev/null || true; }
# service_cpu: tollgate's CPU seconds so far (user + system, from /proc), read while it runs.
service_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.6f\n", ($14 + $15) / hz }' "/proc/$tollgate_pid/stat"
}

# wrk_field FILE FIELD: one figure from wrk's report (requests, rps, p50, p99, non2xx).
wrk_field() {
  case $2 in
    requests) awk '/requests in/ { print $1 }' "$1" ;;
    rps) awk '/^Requests\/sec:/ { print $2 }' "$1" ;;
    p50) awk '$1 == "50%" { print $2 }' "$1" ;;
    p99) awk '$1 == "99%" { print $2 }' "$1" ;;
    non2xx) awk '/Non-2xx or 3xx responses:/ { n = $5 } END { print n + 0 }' "$1" ;;
  esac
}

# check_status NAME FILE DENIALS: fails unless wrk's run in FILE served at least 100 requests,
# all 200 (DENIALS=none) or mostly 429 (DENIALS=most).
check_status() {
  local name=$1 requests non2xx
  requests=$(wrk_field "$2" requests); non2xx=$(wrk_field "$2" non2xx)
  if [ "$requests" -lt 100 ]; then echo "benches/load.sh: $name served only $requests requests" >&2; exit 1; fi
  case $3 in
    none) [ "$non2xx" -eq 0 ] || { echo "benches/load.sh: $name: $non2xx responses were not 200" >&2; exit 1; } ;;
    most) [ "$non2xx" -gt $((requests / 2)) ] || { echo "benches/load.sh: $name: only $non2xx denials" >&2; exit 1; } ;;
  esac
}

# scenario NAME TOML SCRIPT DENIALS PORT...: runs tollgate with TOML and wrk with SCRIPT as fast
# as it goes; prints one table row, with Redis figures summed over the servers at PORT...; sets
# last_rps; fails unless the status codes are as DENIALS says (see check_status).
baseline_rps=""
scenario() {
  local name=$1 toml=$2 script=$3 denials=$4; shift 4
  start_tollgate "$name" "$toml"
  local before after service_before service_after
  before=$(redis_stats "$@"); service_before=$(service_cpu)
  "${pin_load[@]}" wrk -t "$threads" -c "$connections" -d "$duration" --latency -s "benches/$script" \
    "http://127.0.0.1:$tollgate_port" > "$work/$name.wrk"
  after=$(redis_stats "$@"); service_after=$(service_cpu)
  stop_tollgate
  local out=$work/$name.wrk requests
  requests=$(wrk_field "$out" requests); last_rps=$(wrk_field "$out" rps)
  [ -z "$baseline_rps" ] && baseline_rps=$last_rps
  local per_request
  per_request=$(awk -v a="$after" -v b="$before" -v n="$requests" -v rps="$last_rps" -v base="$baseline_rps" \
    -v sa="$service_after" -v sb="$service_before" 'BEGIN {
    split(a, x, " "); split(b, y, " ")
    printf "%.2f %.3f %.1f %.1f", rps / base, (x[1] - y[1]) / n, (x[2] - y[2]) * 1e6 / n, (sa - sb) * 1e6 / n }')
  local ratio evalsha cpu service
  read -r ratio evalsha cpu service <<<"$per_request"
  printf '%-34s %10s %6s %9s %9s %9s %11s %13s %12s\n' "$name" "$last_rps" "$ratio" "$(wrk_field "$out" p50)" \
    "$(wrk_field "$out" p99)" "$(wrk_field "$out" non2xx)" "$evalsha" "$cpu" "$service"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$last_rps" "$ratio" "$(wrk_field "$out" p50)" \
    "$(wrk_field "$out" p99)" "$(wrk_field "$out" non2xx)" "$evalsha" "$cpu" "$service" >> "$work/rows.tsv"
  check_status "$name" "$out" "$denials"
}

# paced NAME TOML RATE: runs tollgate with TOML and wrk paced to RATE requests/s (users.lua's
# RATE mode) and prints one row. The first call is the baseline; later rows show their p99 minus
# its p99. Fails unless every response was 200. It checks the achieved rate is within 10% of
# RATE; a miss marks the row and sets off_target.
off_target=""
paced() {
  local name=$1 toml=$2 rate=$3 out
  out="$work/paced $name.wrk"
  start_tollgate "paced $name" "$toml"
  RATE=$rate THREADS=$threads "${pin_load[@]}" wrk -t "$threads" -c "$connections" -d "$duration" \
    --latency -s benches/users.lua "http://127.0.0.1:$tollgate_port" > "$out"
  stop_tollgate
  check_status "paced $name" "$out" none
  local figures achieved p50_us p99_us
  figures=$(awk '/^paced:/ {
    split($2, r, "="); split($3, s, "="); split($4, m, "="); split($5, t, "=")
    printf "%.0f %d %d\n", r[2] / s[2], m[2], t[2] }' "$out")
  [ -n "$figures" ] || { echo "benches/load.sh: paced $name: users.lua printed no paced: line" >&2; cat "$out" >&2; exit 1; }
  read -r achieved p50_us p99_us <<<"$figures"
  local added="-" note=""
  if [ -z "$baseline_p99_us" ]; then
    baseline_p99_us=$p99_us
  else
    added=$(awk -v a="$p99_us" -v b="$baseline_p99_us" 'BEGIN { printf "%+.3fms", (a - b) / 1000 }')
  fi
  if awk -v a="$achieved" -v r="$rate" 'BEGIN { exit !(a < 0.9 * r || a > 1.1 * r) }'; then
    note="  off target"; off_target=1
  fi
  printf '%-34s %10s %10s %9s %9s %11s%s\n' "$name" "$rate" "$achieved" \
    "$(awk -v u="$p50_us" 'BEGIN { printf "%.3fms", u / 1000 }')" \
    "$(awk -v u="$p99_us" 'BEGIN { printf "%.3fms", u / 1000 }')" "$added" "$note"
}

limits_admit_all='[[policies]]
name = "per_minute"
limit = 1000000000
window = "1m"'
redis_url="redis://127.0.0.1:$redis_port"
cluster_url="redis-cluster://127.0.0.1:${cluster_ports[0]}?node=127.0.0.1:${cluster_ports[1]}&node=127.0.0.1:${cluster_ports[2]}"
baseline_name="1 no limiter (baseline)"; toml_baseline='policies = []'
memory_name="2 memory, 10k users admitted"; toml_memory=$limits_admit_all
redis_name="3 redis, 10k users admitted"; toml_redis="[redis]
url = \"$redis_url\"
$limits_admit_all"

pinning=""
[ "${#pin_service[@]}" -gt 0 ] &&
  pinning="; tollgate pinned to CPU 0, and wrk, Redis and the cluster's 3 primaries to CPU 1"
echo "tollgate load benchmark: wrk -t$threads -c$connections -d$duration$pinning"
# header [EXTRA]: the table's column names, with EXTRA as a last column when given.
header() {
  printf '%-34s %10s %6s %9s %9s %9s %11s %13s %12s' scenario 'req/s' ratio p50 p99 non-2xx 'evalsha/req' 'redis-us/req' 'svc-us/req'
  if [ $# -gt 0 ]; then printf ' %12s\n' "$1"; else printf '\n'; fi
}
# one_round: every scenario once, each a ratio to this round's baseline.
redis_rps_rounds=()
one_round() {
  baseline_rps=""
  scenario "$baseline_name" "$toml_baseline" users.lua none "$redis_port"
  scenario "$memory_name" "$toml_memory" users.lua none "$redis_port"
  scenario "2d memory, headers on denials only" "headers = \"denials\"
$toml_memory" users.lua none "$redis_port"
  scenario "$redis_name" "$toml_redis" users.lua none "$redis_port"
  redis_rps_rounds+=("$last_rps")
  scenario "4 redis, one hot user denied" "[redis]
url = \"$redis_url\"
[[policies]]
name = \"per_minute\"
limit = 3
window = \"1h\"" hot.lua most "$redis_port"
  scenario "5 redis, three policies" "[redis]
url = \"$redis_url\"
[[policies]]
name = \"per_second\"
algorithm = \"token_bucket\"
limit = 1000000
window = \"1s\"
[[policies]]
name = \"per_minute\"
algorithm = \"sliding_window\"
limit = 1000000
window = \"1m\"
[[policies]]
name = \"per_day\"
limit = 1000000000
window = \"1d\"" users.lua none "$redis_port"
  scenario "6 cluster, 10k users admitted" "[redis]
url = \"$cluster_url\"
$limits_admit_all" users.lua none "${cluster_ports[@]}"
}

# medians: reads rows.tsv and prints, per scenario in first-seen order, the median of each
# figure over the rounds, latencies in ms (with an even count, the lower middle value), and the
# lowest and highest single ratio: on a noisy machine the spread says how far to trust a median.
medians() {
  awk -F'\t' '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v + 0 }
    function sorted(list, a,   n, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return n
    }
    function median(list,   a, n) { n = sorted(list, a); return a[int((n + 1) / 2)] }
    function spread(list,   a, n) { n = sorted(list, a); return sprintf("%.2f-%.2f", a[1], a[n]) }
    !($1 in seen) { seen[$1] = 1; order[++count] = $1 }
    { for (c = 2; c <= 9; c++) { v = (c == 4 || c == 5) ? ms($c) : $c; col[$1, c] = col[$1, c] " " v } }
    END {
      for (k = 1; k <= count; k++) {
        name = order[k]
        printf "%-34s %10.2f %6.2f %7.3fms %7.3fms %9d %11.3f %13.1f %12.1f %12s\n", name,
          median(col[name, 2]), median(col[name, 3]), median(col[name, 4]), median(col[name, 5]),
          median(col[name, 6]), median(col[name, 7]), median(col[name, 8]), median(col[name, 9]),
          spread(col[name, 3])
      }
    }' "$work/rows.tsv"
}

header
for round in $(seq "$rounds"); do
  [ "$rounds" -gt 1 ] && echo "round $round of $rounds"
  one_round
done
if [ "$rounds" -gt 1 ]; then
  echo
  echo "median of $rounds rounds (each ratio taken against its own round's baseline):"
  header 'ratios'
  medians
fi
redis_rps=$(printf '%s\n' "${redis_rps_rounds[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')

# The latency the limiter adds below saturation: the same fixed rate, half of scenario 3's
# maximum, for the baseline and for the limiters. wrk has no rate option; users.lua paces it
# through wrk's delay() hook, and its latency is measured from each send, so this is a paced
# closed loop, not corrected for coordinated omission (users.lua says more). wrk2 corrects it
# but Debian does not package it; oha would do (cargo install oha), but one load generator keeps
# CI's setup to one apt package.
half_rate=$(awk -v r="$redis_rps" 'BEGIN { h = int(r / 2); print (h < 1 ? 1 : h) }')
baseline_p99_us=""
echo
echo "p99 added by the limiter at half the maximum load: wrk -t$threads -c$connections -d$duration paced to $half_rate req/s (half of scenario 3's)"
printf '%-34s %10s %10s %9s %9s %11s\n' run 'target/s' 'achieved/s' p50 p99 'p99 added'
paced "$baseline_name" "$toml_baseline" "$half_rate"
paced "$memory_name" "$toml_memory" "$half_rate"
paced "$redis_name" "$toml_redis" "$half_rate"
if [ -n "$off_target" ]; then
  echo "benches/load.sh: a paced run missed its target rate by more than 10%: its latencies are not at half load" >&2
  # Quick mode asserts no speed.
  [ -n "${QUICK:-}" ] || exit 1
fi
