# What the benchmark scripts share, sourced after they cd to the repository: a scratch directory
# and the processes they start (both cleaned up on exit), free ports, and waiting for a listener.

work=$(mktemp -d)
pids=()
# Waits for what it killed: Redis servers would otherwise outlive the script as zombies.
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT [LOG]: waits up to 60 s for a listener (a server under valgrind starts slowly),
# showing LOG if none comes.
wait_port() {
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "$0: nothing listens on :$1" >&2
  [ -n "${2:-}" ] && cat "$2" >&2
  exit 1
}
