#!/usr/bin/env bash
# Many partitions on few brokers: idle cost, a producer beside them, and recovery.
#
#   scripts/scale-bench.sh [--brokers N] [--partitions N] [--rf N] [--idle-secs S]
#                          [--records N] [--timeout S] [--no-build] [--keep]
#
# Starts --brokers brokers (default 3) on loopback, creates topic `idle` with --partitions
# partitions (default 1000) and replication factor --rf (default: min(3, brokers)), and
# reports:
#   1. the time until every partition acknowledged a write after the create;
#   2. each broker's CPU (% of one core) and RSS over --idle-secs (default 10) of no
#      traffic, its data directory's disk use, open files and memory mappings;
#   3. `rafka-bench produce` of --records (default 1,000,000) 100 B records, acks=all, to
#      a 1-partition topic beside the idle ones (run with --partitions 0 for the rate
#      without them);
#   4. kill -9 of every broker and a restart: the time until every partition
#      acknowledged a write again;
#   5. kill -9 of broker 1: the time until every partition acknowledged a write (those
#      broker 1 led need a new leader; with --rf 1 this step is skipped).
# Data and logs live under target/scale-bench, deleted at the end unless --keep.
set -euo pipefail
cd "$(dirname "$0")/.."

brokers=3
partitions=1000
rf=
idle_secs=10
timeout=300
records=1000000
build=1
keep=0
while (($#)); do
  case "$1" in
    --brokers) brokers=$2; shift 2 ;;
    --partitions) partitions=$2; shift 2 ;;
    --rf) rf=$2; shift 2 ;;
    --idle-secs) idle_secs=$2; shift 2 ;;
    --records) records=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -n $rf ]] || rf=$((brokers < 3 ? brokers : 3))

if ((build)); then
  cargo build --release -p rafka-broker -p rafka-bench --bins
fi
bin=${CARGO_TARGET_DIR:-target}/release
data=target/scale-bench
rm -rf "$data"
mkdir -p "$data"
pids=()
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
trap cleanup EXIT

addrs=() peers=()
for ((i = 1; i <= brokers; i++)); do
  addrs+=("127.0.0.1:$(free_port)")
  peers+=("$i=${addrs[i - 1]}")
done
bootstrap=$(IFS=,; echo "${addrs[*]}")
peer_list=$(IFS=,; echo "${peers[*]}")
cat >"$data/broker.toml" <<EOF
max_partitions_per_topic = 100000
max_partitions = 200000
EOF

start() {
  local i=$1 cluster_args=()
  ((brokers == 1)) || cluster_args=(--peers "$peer_list")
  "$bin/rafka" start --config "$data/broker.toml" --node-id "$i" --listen "${addrs[i - 1]}" \
    --data-dir "$data/b$i" "${cluster_args[@]}" >>"$data/b$i.log" 2>&1 &
  pids[i - 1]=$!
}

kill9() {
  kill -9 "${pids[$1 - 1]}"
  wait "${pids[$1 - 1]}" 2>/dev/null || true
}

# CPU ticks (user + system) of a process.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for ((i = 1; i <= brokers; i++)); do start "$i"; done
wait_for 60 "the cluster's metadata leader" "$bin/rafka" --bootstrap "$bootstrap" cluster status

if ((partitions > 0)); then
  echo "== 1. topic idle: $partitions partitions, replication factor $rf"
  "$bin/rafka-bench" scale --timeout-secs "$timeout" --bootstrap "$bootstrap" --topic idle --partitions "$partitions" \
    --replication-factor "$rf"

  echo "== 2. idle for ${idle_secs} s"
  hz=$(getconf CLK_TCK)
  before=()
  for ((i = 1; i <= brokers; i++)); do before[i]=$(ticks "${pids[i - 1]}"); done
  sleep "$idle_secs"
  for ((i = 1; i <= brokers; i++)); do
    cpu=$(awk -v t=$(( $(ticks "${pids[i - 1]}") - before[i] )) -v hz="$hz" -v s="$idle_secs" \
      'BEGIN {printf "%.1f", t * 100 / (hz * s)}')
    rss=$(awk '/VmRSS/ {t = $2} /RssAnon/ {a = $2} /RssFile/ {f = $2}
      END {printf "%.0f MB (heap %.0f, files %.0f)", t / 1024, a / 1024, f / 1024}' "/proc/${pids[i - 1]}/status")
    disk=$(du -sh "$data/b$i" | cut -f1)
    threads=$(awk '/Threads/ {print $2}' "/proc/${pids[i - 1]}/status")
    maps=$(wc -l <"/proc/${pids[i - 1]}/maps")
    fds=$(find "/proc/${pids[i - 1]}/fd" -mindepth 1 -maxdepth 1 | wc -l)
    echo "broker $i: CPU ${cpu}% of a core, RSS $rss, disk $disk, $threads threads, $fds files open, $maps mappings"
  done
fi

echo "== 3. a producer beside them: $records records of 100 B, acks=all, one partition"
"$bin/rafka-bench" produce --bootstrap "$bootstrap" --topic hot --partitions 1 \
  --replication-factor "$rf" --records "$records" --acks all

((partitions > 0)) || exit 0
echo "== 4. kill -9 of every broker, then a restart"
for ((i = 1; i <= brokers; i++)); do kill9 "$i"; done
for ((i = 1; i <= brokers; i++)); do start "$i"; done
"$bin/rafka-bench" scale --timeout-secs "$timeout" --bootstrap "$bootstrap" --topic idle

if ((rf > 1)); then
  echo "== 5. kill -9 of broker 1"
  kill9 1
  survivors=$(IFS=,; echo "${addrs[*]:1}")
  "$bin/rafka-bench" scale --timeout-secs "$timeout" --bootstrap "$survivors" --topic idle
fi
