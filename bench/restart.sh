#!/usr/bin/env bash
# How soon a node restarted with a full disk tier serves from it, with its origin down.
#
#   bench/restart.sh                          # 100,000 objects of 1 KiB
#   BENCH_OBJECTS=10000 bench/restart.sh      # a quicker run
#
# 1. Starts Holdfast (release build) with `cache.disk` and its built-in demo origin,
#    and fills the disk tier with BENCH_OBJECTS distinct 1 KiB objects (wrk, one URL
#    after the other), until holdfast_disk_writes_total says they are all on disk.
# 2. Stops it (SIGTERM), starts it again on the same directory without any origin, and
#    times, from the exec, the first 200 served from the cache for an object in the
#    middle of the set, and whether the index was still loading then; then reads the
#    start-up log's "recovered N objects in T ms".
# 3. Prints the bytes on disk per object (du of the objects directory / objects): the
#    files' lengths, and the blocks the filesystem allocated for them.
#
# Everything runs on loopback ports from BENCH_PORT_BASE (default 29080, 3 ports) in a
# work directory under BENCH_TMP (default /tmp), removed at the end unless BENCH_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_OBJECTS:-100000}
PORT_BASE=${BENCH_PORT_BASE:-29080}
HF_PORT=$PORT_BASE
HF_ADMIN=$((PORT_BASE + 1))
ORIGIN_PORT=$((PORT_BASE + 2))
HOST=bench.local

log() { printf 'restart: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked
fi
WORK=$(mktemp -d "${BENCH_TMP:-/tmp}/holdfast-restart.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
cp target/release/holdfast "$WORK/holdfast"
mkdir -p "$WORK/www"
head -c 1024 /dev/urandom >"$WORK/www/1k.bin"

node_conf() { # with_origin
  cat <<EOF
server: { threads: 2 }
listen: ["127.0.0.1:$HF_PORT"]
admin: { listen: "127.0.0.1:$HF_ADMIN" }
cache:
  memory: 64MiB
  max_object: 1MiB
  disk: { path: $WORK/disk, size: 8GiB }
shutdown_grace: 1s
customers:
  - name: bench
    hosts: ["$HOST"]
    origin: { servers: ["127.0.0.1:$ORIGIN_PORT"], connect_timeout: 1s }
    cache: { default_ttl: 1d, override_origin: true, stale_if_error: 1d }
EOF
  [ "$1" = 0 ] || printf 'demo_origin: { listen: "127.0.0.1:%s", root: %s/www }\n' "$ORIGIN_PORT" "$WORK"
}
node_conf 1 >"$WORK/fill.yaml"
node_conf 0 >"$WORK/serve.yaml"

metric() { curl -s "http://127.0.0.1:$HF_ADMIN/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
wait_port() {
  for _ in $(seq 400); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

RUST_LOG=warn "$WORK/holdfast" -c "$WORK/fill.yaml" >"$WORK/fill.log" 2>&1 &
HF=$!
PIDS+=("$HF")
wait_port "$HF_ADMIN" || die "holdfast did not start: $(tail -3 "$WORK/fill.log")"
cat >"$WORK/fill.lua" <<EOF
local n = 0
function request()
  n = n % $N + 1
  return wrk.format(nil, "/1k.bin?u=" .. n)
end
EOF
log "filling the disk tier with $N objects"
t0=$(date +%s)
wrk -t1 -c32 -d600s -H "Host: $HOST" -s "$WORK/fill.lua" "http://127.0.0.1:$HF_PORT/" >/dev/null 2>&1 &
WRK=$!
PIDS+=("$WRK")
while [ "$(metric holdfast_disk_writes_total)" -lt "$N" ]; do
  kill -0 "$WRK" 2>/dev/null || die "wrk ended before the tier was full"
  sleep 1
done
kill "$WRK" 2>/dev/null || true
log "filled in $(($(date +%s) - t0)) s: $(metric holdfast_disk_objects) objects, $(metric holdfast_disk_bytes) bytes"
kill -TERM "$HF"
wait "$HF" || true

# Drop what the kernel caches of the files? Not here: a PoP restarting after a crash
# or a deploy has them in its page cache too. A cold start after a reboot reads the
# prefixes from the device instead, which this does not measure.
probe="/1k.bin?u=$((N / 2))"
start=$(date +%s%N)
RUST_LOG=info "$WORK/holdfast" -c "$WORK/serve.yaml" >"$WORK/serve.log" 2>&1 &
HF=$!
PIDS+=("$HF")
first=""
for _ in $(seq 20000); do
  got=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" "http://127.0.0.1:$HF_PORT$probe" 2>/dev/null || true)
  if [ "$got" = 200 ]; then
    first=$(date +%s%N)
    break
  fi
  sleep 0.001
done
[ -n "$first" ] || die "no hit after the restart: $(tail -5 "$WORK/serve.log")"
loading=$(metric holdfast_disk_loading)
for _ in $(seq 600); do
  grep -q "recovered" "$WORK/serve.log" && break
  sleep 0.1
done
recovered=$(grep -o 'recovered [0-9]* objects in [0-9]* ms' "$WORK/serve.log" || echo "not logged")
objects=$(metric holdfast_disk_objects)
bytes_on_disk=$(du -sb "$WORK/disk/objects" | cut -f1)
blocks_on_disk=$(du -s --block-size=1 "$WORK/disk/objects" | cut -f1)
printf '\n## Restart with a full disk tier\n\n'
printf -- '- holdfast built from: commit %s\n' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
printf -- '- machine: %s CPUs, %s; disk tier on %s (%s)\n' "$(nproc)" \
  "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" "$WORK" "$(df --output=fstype "$WORK" | tail -1)"
printf -- '- objects: %s of 1 KiB; after the restart the index holds %s\n' "$N" "$objects"
printf -- '- start to first hit (%s), origin down: %s ms; index still loading then: %s\n' \
  "$probe" "$(((first - start) / 1000000))" "$([ "$loading" = 1 ] && echo yes || echo no)"
printf -- '- index load: %s\n' "$recovered"
printf -- '- bytes on disk per object (du / objects): %s in the files, %s allocated\n' \
  "$((bytes_on_disk / objects))" "$((blocks_on_disk / objects))"
