#!/usr/bin/env bash
# The memory store under a flood of distinct callers: tollgate's VmRSS (from /proc/PID/status)
# idle, at its peak (VmHWM), at the end of the flood and two windows after it, with the store's
# entries and refusals from /metrics. Needs wrk (Debian: apt-get install wrk). Not run in CI.
#
#   benches/flood.sh                                  new callers for 60 s, window = "10s"
#   RATE=33334 CALLERS=2000000 benches/flood.sh       two million callers, spread over the minute
#   WINDOW=1h CALLERS=1000000 SETTLE=0 benches/flood.sh
#                                 exactly a million callers held: the memory per caller at the cap
#
# Other knobs: RATE (requests/s over the run, as benches/users.lua paces them), DURATION (wrk's -d, default 60s), THREADS and CONNECTIONS (wrk's -t and -c, 2 and
# 64), MAX_CALLERS (memory.max_callers; unset keeps the default), SETTLE (seconds to watch after
# the flood; default two windows).
set -euo pipefail
cd "$(dirname "$0")/.."

window=${WINDOW:-10s}
duration=${DURATION:-60s}
threads=${THREADS:-2}
connections=${CONNECTIONS:-64}
callers=${CALLERS:-0}
command -v wrk >/dev/null || { echo "benches/flood.sh: wrk is not on PATH (apt-get install wrk)" >&2; exit 2; }

seconds_of() {
  local n=${1%[smhd]}
  case $1 in *s) echo "$n" ;; *m) echo $((n * 60)) ;; *h) echo $((n * 3600)) ;; *d) echo $((n * 86400)) ;; esac
}
settle=${SETTLE:-$((2 * $(seconds_of "$window")))}

work=$(mktemp -d)
# A copy, so that another checkout's build into the same target directory cannot swap it out
# mid-run. BIN runs a binary already built instead (another revision's, say).
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --bins
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/tollgate
fi
cp "$BIN" "$work/tollgate"
bin=$work/tollgate
pid=
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
{
  printf 'listen = "127.0.0.1:%s"\n' "$port"
  [ -n "${MAX_CALLERS:-}" ] && printf '[memory]\nmax_callers = %s\n' "$MAX_CALLERS"
  printf '[[policies]]\nname = "per_window"\nlimit = 3\nwindow = "%s"\n' "$window"
} > "$work/tollgate.toml"

# Two cores: tollgate on CPU 0, wrk on CPU 1, as benches/load.sh does.
pin_service=(taskset -c 0); pin_load=(taskset -c 1)
command -v taskset >/dev/null || { pin_service=(); pin_load=(); }
RUST_LOG=warn "${pin_service[@]}" "$bin" --config "$work/tollgate.toml" >"$work/tollgate.log" 2>&1 &
pid=$!
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
url=http://127.0.0.1:$port

rss() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$pid/status"; }
metric() { curl -s "$url/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
mb() { awk -v kb="$1" 'BEGIN { printf "%.1f MB", kb / 1024 }'; }

# Idle: after one caller's second of requests, so the runtime's threads and buffers exist.
USERS=1 "${pin_load[@]}" wrk -t1 -c1 -d1s -s benches/users.lua "$url/user" >/dev/null
sleep 1
idle=$(rss VmRSS)

# One line a second while the flood runs and after it: seconds, VmRSS, entries held.
sample() {
  local start=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    printf '%4d s  %9s  entries %s\n' $((SECONDS - start)) "$(mb "$(rss VmRSS)")" "$(metric tollgate_memory_entries)"
    sleep 1
  done
}
sample > "$work/samples" &
sampler=$!

RUN=$$ CALLERS=$callers THREADS=$threads RATE=${RATE:-} "${pin_load[@]}" \
  wrk -t"$threads" -c"$connections" -d"$duration" -s benches/flood.lua "$url/user" > "$work/wrk.txt"
requests=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
rps=$(awk '/^Requests\/sec:/ { print $2 }' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx or 3xx responses:/ { n = $5 } END { print n + 0 }' "$work/wrk.txt")
end=$(rss VmRSS)
peak=$(rss VmHWM)
entries_end=$(metric tollgate_memory_entries)
full=$(metric tollgate_memory_full_total)

sleep "$settle"
after=$(rss VmRSS)
entries_after=$(metric tollgate_memory_entries)
kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true

distinct=$requests
[ "$callers" -gt 0 ] && [ "$callers" -lt "$requests" ] && distinct=$callers
cat "$work/samples"
echo
echo "window $window, memory.max_callers ${MAX_CALLERS:-default}; wrk -t$threads -c$connections -d$duration"
echo "requests      $requests in $duration ($rps/s), up to $distinct distinct callers; $non2xx not 200"
echo "idle          $(mb "$idle")"
echo "peak          $(mb "$peak") (VmHWM)"
echo "flood's end   $(mb "$end"), $entries_end entries held, $full new callers refused at the cap"
echo "${settle} s later  $(mb "$after"), $entries_after entries held: $(awk -v a="$after" -v i="$idle" 'BEGIN { printf "%.2f", a / i }') x idle"
# Only meaningful with the entries still held, as with a long window.
[ "${entries_end:-0}" -ge 100000 ] &&
  echo "per entry     $(awk -v e="$end" -v i="$idle" -v n="$entries_end" 'BEGIN { printf "%.0f bytes", (e - i) * 1024 / n }') of VmRSS over idle, at the flood's end"
exit 0
