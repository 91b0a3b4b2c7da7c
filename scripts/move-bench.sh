#!/usr/bin/env bash
# Time to move a large partition to a broker that just joined, while a producer writes to it.
#
#   scripts/move-bench.sh [--brokers 1|3] [--records N] [--record-size B] [--rate R]
#                         [--no-build] [--keep]
#
# Starts a cluster of --brokers brokers (default 3) on loopback, fills topic `moving`
# (one partition, replication factor = --brokers) with --records records of --record-size
# bytes (default 1,000,000 x 1 KiB: about 1 GB), starts one more broker with `--join`, and
# runs `rafka-bench reassign --new-broker`: one replica (a follower's; with one replica, the
# leader's) moves to the new broker while a producer sends --rate records/s (default 2,000,
# acks=all) to the partition. Prints the move's time and the producer's send-to-ack
# latency in the 10 s before the move, during it, and in the 10 s after it (the old
# replica's files are freed in that time). Data and broker logs live under
# target/move-bench and are deleted at the end unless --keep.
set -euo pipefail
cd "$(dirname "$0")/.."

brokers=3
records=1000000
record_size=1024
rate=2000
build=1
keep=0
while (($#)); do
  case "$1" in
    --brokers) brokers=$2; shift 2 ;;
    --records) records=$2; shift 2 ;;
    --record-size) record_size=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
case "$brokers" in 1 | 3) ;; *) echo "--brokers: 1 or 3" >&2; exit 2 ;; esac

if ((build)); then
  cargo build --release -p rafka-broker -p rafka-bench --bins
fi
bin=${CARGO_TARGET_DIR:-target}/release
data=target/move-bench
rm -rf "$data"
mkdir -p "$data"
pids=()
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
trap cleanup EXIT

addrs=() peers=()
for ((i = 1; i <= brokers + 1; i++)); do
  addrs+=("127.0.0.1:$(free_port)")
  peers+=("$i=${addrs[i - 1]}")
done
bootstrap=$(IFS=,; echo "${addrs[*]:0:brokers}")
peer_list=$(IFS=,; echo "${peers[*]:0:brokers}")
for ((i = 1; i <= brokers; i++)); do
  cluster_args=()
  ((brokers == 1)) || cluster_args=(--peers "$peer_list")
  "$bin/rafka" start --node-id "$i" --listen "${addrs[i - 1]}" --data-dir "$data/b$i" \
    "${cluster_args[@]}" >"$data/b$i.log" 2>&1 &
  pids+=($!)
done
for ((i = 1; i <= brokers; i++)); do
  wait_for 30 "broker $i" grep -q "rafka broker listening on" "$data/b$i.log"
done
wait_for 60 "the cluster's metadata leader" "$bin/rafka" --bootstrap "$bootstrap" cluster status

echo "== filling topic moving: $records records of $record_size B, replication factor $brokers"
"$bin/rafka-bench" produce --bootstrap "$bootstrap" --topic moving --partitions 1 \
  --replication-factor "$brokers" --records "$records" --record-size "$record_size" --acks all

new=$((brokers + 1))
echo "== broker $new joins"
"$bin/rafka" start --node-id "$new" --listen "${addrs[new - 1]}" --data-dir "$data/b$new" \
  --join "$bootstrap" >"$data/b$new.log" 2>&1 &
pids+=($!)
wait_for 60 "broker $new" grep -q "rafka broker listening on" "$data/b$new.log"

echo "== the move"
"$bin/rafka-bench" reassign --bootstrap "$bootstrap" --topic moving --partition 0 \
  --new-broker "$new" --rate "$rate" --record-size "$record_size" --acks all --settle-secs 10
du -sh "$data"/b*/ 2>/dev/null || true
