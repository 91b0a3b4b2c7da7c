# Shared by the benchmark scripts (sourced): servers run in the background with their pids
# in the array `pids` and their logs in "$data"/*.log.

# free_port: prints a free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for DEADLINE_SECS DESCRIPTION COMMAND...: polls COMMAND until it succeeds; fails
# (with the servers' logs) if a server died or the deadline passed.
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2 p
  shift 2
  until "$@" >/dev/null 2>&1; do
    for p in "${pids[@]}"; do
      kill -0 "$p" 2>/dev/null || { echo "a server died waiting for $what" >&2; tail -n 20 "$data"/*.log >&2; exit 1; }
    done
    ((SECONDS < deadline)) || { echo "timed out waiting for $what" >&2; tail -n 20 "$data"/*.log >&2; exit 1; }
    sleep 0.1
  done
}

# kill_all [SIGNAL]: signals every server (TERM by default) and waits for them.
kill_all() {
  local p
  for p in "${pids[@]}"; do kill "-${1:-TERM}" "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}

# cleanup: stops the servers and deletes "$data" unless `keep` is 1 (for `trap cleanup EXIT`).
cleanup() {
  kill_all
  ((${keep:-0})) || rm -rf "$data"
}
