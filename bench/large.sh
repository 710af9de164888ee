#!/usr/bin/env bash
# bench/large.sh: large objects, Holdfast against nginx proxy_cache, in one run.
#
#   bench/large.sh                       # 1 GiB objects (needs ~12 GiB free under BENCH_TMP)
#   BENCH_SIZE_MIB=256 bench/large.sh    # a quicker run
#
# 1. An origin (nginx serving sparse files) holds one object for hits and eight for
#    cold fills, BENCH_SIZE_MIB each. Holdfast (release build, `server: { threads: 1 }`,
#    a 64 MiB memory tier, `max_object: 16MiB`, the disk tier under the work directory)
#    and nginx (`master_process off`, one process, `proxy_cache` on the same filesystem,
#    `proxy_buffering on`, access_log off) each cache from it.
# 2. Hit throughput per core: the hit object is fetched once to fill it, then
#    BENCH_HITS times (default 5) with curl, one after the other; the server's CPU time
#    (user + system from /proc/PID/stat) over those hits gives GiB per CPU second.
# 3. Memory of cold fills: the eight cold objects are fetched at once (eight curls); the
#    server's VmRSS is sampled every 50 ms and the peak growth over its RSS before is
#    reported, with the wall time of the eight.
# 4. Time to first byte of a cold range 90 % into an object, with slices of 8 MiB on both
#    sides (Holdfast's `cache.slice: 8MiB`, nginx's `slice 8m`): each asks the origin only
#    for the slice that holds it. Then, without slices, Holdfast's whole-object fill
#    (the range waits for the bytes before it).
#
# Ports from BENCH_PORT_BASE (default 29180, 3 ports); work directory under BENCH_TMP
# (default /tmp), removed at the end unless BENCH_KEEP=1. Machine facts (CPU model) first.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${BENCH_SIZE_MIB:-1024}
HITS=${BENCH_HITS:-5}
PORT_BASE=${BENCH_PORT_BASE:-29180}
HF_PORT=$PORT_BASE
HF_ADMIN=$((PORT_BASE + 1))
NGX_PORT=$((PORT_BASE + 2))
ORIGIN_PORT=$((PORT_BASE + 3))
HOST=bench.local

log() { printf 'large: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
NGINX=$(command -v nginx || true)
[ -n "$NGINX" ] || { [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx; } || true
if [ -z "$NGINX" ]; then
  as_root apt-get update -qq
  printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
  as_root chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends nginx-light >/dev/null ||
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends nginx >/dev/null
  as_root rm -f /usr/sbin/policy-rc.d
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
command -v curl >/dev/null || { as_root apt-get update -qq && as_root apt-get install -y -qq curl >/dev/null; }

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked
fi
WORK=$(mktemp -d "${BENCH_TMP:-/tmp}/holdfast-large.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/www" "$WORK/ngx-cache" "$WORK/ngx-tmp" "$WORK/origin-tmp"
for name in hit cold1 cold2 cold3 cold4 cold5 cold6 cold7 cold8 range range2; do
  truncate -s "${SIZE_MIB}M" "$WORK/www/$name.bin"
done
SIZE=$((SIZE_MIB * 1024 * 1024))

cat >"$WORK/origin.conf" <<EOF
daemon off; master_process off; worker_processes 1; error_log $WORK/origin.err warn; pid $WORK/origin.pid;
events { worker_connections 1024; }
http {
  access_log off; sendfile on; client_body_temp_path $WORK/origin-tmp;
  server { listen 127.0.0.1:$ORIGIN_PORT; root $WORK/www;
    location / { add_header Cache-Control "max-age=3600"; } }
}
EOF
cat >"$WORK/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; error_log $WORK/nginx.err warn; pid $WORK/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off; sendfile on; tcp_nopush on;
  proxy_temp_path $WORK/ngx-tmp; client_body_temp_path $WORK/ngx-tmp;
  proxy_cache_path $WORK/ngx-cache levels=1:2 keys_zone=c:64m max_size=16g inactive=1h use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 16; }
  server { listen 127.0.0.1:$NGX_PORT;
    proxy_http_version 1.1; proxy_set_header Connection "";
    add_header X-Cache \$upstream_cache_status;
    location / { proxy_pass http://origin; proxy_cache c; proxy_cache_valid 200 206 1h; proxy_buffering on; }
    location /sliced/ { slice 8m; proxy_cache c; proxy_cache_key \$uri\$slice_range;
      proxy_set_header Range \$slice_range; proxy_cache_valid 200 206 1h;
      proxy_pass http://origin/; }
  }
}
EOF
cat >"$WORK/holdfast.yaml" <<EOF
server: { threads: 1 }
listen: ["127.0.0.1:$HF_PORT"]
admin: { listen: "127.0.0.1:$HF_ADMIN" }
cache:
  memory: 64MiB
  max_object: 16MiB
  disk: { path: $WORK/hf-cache, size: 16GiB, max_object: 2GiB }
customers:
  - name: bench
    hosts: [$HOST]
    origin: { servers: ["127.0.0.1:$ORIGIN_PORT"], read_timeout: 60s }
  - name: sliced
    hosts: [sliced.local]
    origin: { servers: ["127.0.0.1:$ORIGIN_PORT"], read_timeout: 60s }
    cache: { slice: 8MiB }
EOF

"$NGINX" -c "$WORK/origin.conf" -p "$WORK" &
PIDS+=($!)
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" &
NGX_PID=$!
PIDS+=($NGX_PID)
RUST_LOG=warn target/release/holdfast -c "$WORK/holdfast.yaml" >"$WORK/holdfast.log" 2>&1 &
HF_PID=$!
PIDS+=($HF_PID)
for _ in $(seq 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$HF_ADMIN/healthz" 2>/dev/null &&
    curl -fsS -o /dev/null "http://127.0.0.1:$ORIGIN_PORT/hit.bin" -r 0-0 2>/dev/null && break
  sleep 0.1
done

cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
url() { # server path
  case $1 in
    holdfast) echo "http://127.0.0.1:$HF_PORT$2" ;;
    nginx) echo "http://127.0.0.1:$NGX_PORT$2" ;;
  esac
}
pid_of() { case $1 in holdfast) echo "$HF_PID" ;; nginx) echo "$NGX_PID" ;; esac; }
fetch() { curl -fsS -o /dev/null -H "Host: $HOST" "$@"; }

log "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs; objects of $SIZE_MIB MiB"
TICK=$(getconf CLK_TCK)

# 2. Hit throughput per core.
declare -A GIB_PER_CPU
for server in holdfast nginx; do
  fetch "$(url $server /hit.bin)"
  sleep 1
  pid=$(pid_of $server)
  before=$(cpu_ticks "$pid")
  began=$(date +%s.%N)
  for _ in $(seq "$HITS"); do fetch "$(url $server /hit.bin)"; done
  wall=$(echo "$(date +%s.%N) - $began" | bc -l)
  cpu=$(echo "($(cpu_ticks "$pid") - $before) / $TICK" | bc -l)
  status=$(curl -fsS -o /dev/null -D - -H "Host: $HOST" -r 0-0 "$(url $server /hit.bin)" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "cache-status" || tolower($1) == "x-cache" { print $2 }')
  case $status in *hit* | HIT) ;; *) die "$server: /hit.bin is not a hit ($status)" ;; esac
  gib=$(echo "$HITS * $SIZE_MIB / 1024" | bc -l)
  GIB_PER_CPU[$server]=$(echo "$gib / $cpu" | bc -l)
  printf 'hits      %-8s %d x %d MiB: %.2f s wall, %.2f CPU s, %.2f GiB per CPU second\n' \
    "$server" "$HITS" "$SIZE_MIB" "$wall" "$cpu" "${GIB_PER_CPU[$server]}"
done
printf 'hits      Holdfast/nginx GiB per CPU second: %.2f\n' \
  "$(echo "${GIB_PER_CPU[holdfast]} / ${GIB_PER_CPU[nginx]}" | bc -l)"

# 3. Eight concurrent cold fills.
for server in holdfast nginx; do
  pid=$(pid_of $server)
  base=$(rss_kib "$pid")
  peak=$base
  began=$(date +%s.%N)
  fills=()
  for i in 1 2 3 4 5 6 7 8; do
    fetch "$(url $server /cold$i.bin)" &
    fills+=($!)
  done
  while kill -0 "${fills[@]}" 2>/dev/null; do
    now=$(rss_kib "$pid")
    [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.05
  done
  wait "${fills[@]}" || true
  wall=$(echo "$(date +%s.%N) - $began" | bc -l)
  printf 'fills     %-8s 8 x %d MiB cold: %.2f s wall, RSS %d MiB before, peak growth %d MiB\n' \
    "$server" "$SIZE_MIB" "$wall" $((base / 1024)) $(((peak - base) / 1024))
done

# 4. Time to first byte of a cold range 90 % into an object.
at=$((SIZE / 10 * 9))
ttfb() { # host url
  curl -fsS -o /dev/null -H "Host: $1" -r "$at-$((at + 1023))" -w '%{time_starttransfer}' "$2"
}
printf 'range     %-8s cold bytes=%d-%d: first byte after %.3f s (cache.slice 8MiB)\n' holdfast "$at" $((at + 1023)) \
  "$(ttfb sliced.local "$(url holdfast /range.bin)")"
printf 'range     %-8s cold bytes=%d-%d: first byte after %.3f s (slice 8m)\n' nginx "$at" $((at + 1023)) \
  "$(ttfb $HOST "$(url nginx /sliced/range.bin)")"
printf 'range     %-8s cold bytes=%d-%d: first byte after %.3f s (no slices: the whole-object fill)\n' holdfast "$at" $((at + 1023)) \
  "$(ttfb $HOST "$(url holdfast /range2.bin)")"
