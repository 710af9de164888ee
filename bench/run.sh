#!/usr/bin/env bash
# bench/run.sh: Holdfast against nginx proxy_cache, one core each, on loopback.
#
#   bench/run.sh                                   # 3 x 10 s per measurement: ~20 min, ~26 with oha
#   BENCH_DURATION=3s BENCH_RUNS=1 BENCH_WARMUP=1s bench/run.sh   # smoke run, ~2 min
# (plus the release build, when the tree has changed).
#
# What it does, in one run that stops by itself:
#   1. installs what is missing (apt-get: nginx-light or nginx, wrk, curl; `cargo install
#      oha` only with BENCH_OHA=1) and builds Holdfast with `cargo build --release --locked`;
#   2. starts an origin: nginx serving generated 1 KiB and 100 KiB files on 127.0.0.1;
#   3. for each phase, starts both caches fresh (Holdfast with `server: { threads: 1 }`, nginx
#      with `proxy_cache` and 1 worker), both pinned to the same core (`taskset -c
#      $BENCH_SERVER_CPU`; the one not being driven is idle), checks and warms each, then
#      drives them with wrk pinned to another core (`taskset -c $BENCH_CLIENT_CPU`, also where
#      the origin runs) in alternation, Holdfast, nginx, Holdfast, nginx, ..., BENCH_RUNS runs
#      each of BENCH_DURATION at BENCH_CONNECTIONS connections, so that the drift of a shared
#      machine falls on both alike; and keeps the median of each number over a server's runs:
#        hit-1k, hit-100k  one cached object requested over and over (checked to be a hit);
#        range-100k        the first 64 KiB of the cached 100 KiB object (`Range: bytes=0-65535`,
#                          checked to be a 206 hit), over and over;
#        miss              every request a new URL (query-string counter), stored on the way;
#        tls-1k, tls-100k  hit-1k and hit-100k over TLS (HTTP/1.1, wrk over https; both caches
#                          with the same ECDSA P-256 certificate, nginx `listen ssl http2`);
#        h2-1k, h2-100k    the same over TLS and HTTP/2, driven by h2load (nghttp2-client)
#                          with BENCH_H2_STREAMS streams per connection; its p50/p99 come
#                          from its per-request log;
#        stale             objects cached with max-age=1, stale-if-error=3600 by both, the
#                          origin then stopped and max-age waited out: every answer is
#                          stale-if-error (checked on both before measuring);
#      and, when oha is installed (on PATH, or BENCH_OHA=1), drives all but the miss and disk-100k phases
#      with oha too, alternating the same way;
#   4. prints one table per load generator: req/s, p50, p99, errors, CPU use, CPU µs per
#      request and peak RSS (VmHWM) of both, the Holdfast/nginx req/s ratio and the
#      Holdfast/nginx ratio of requests per CPU second; then Holdfast's bytes per cached
#      object after the miss phase, from the admin /metrics (holdfast_cache_bytes /
#      holdfast_cache_objects) and from the growth of its RSS over its own measured runs.
#
# CPU µs per request: the server's CPU time (user + system from /proc/PID/stat; for nginx
# summed over master, worker and cache processes) from just before to just after a run,
# divided by the requests answered in that run; the median over the runs. It is what a
# request costs the server on its core, and it stays meaningful when the server did not
# get its whole core (a noisy neighbour) or the load generator was the limit (wrk near
# 100 % CPU, e.g. 100 KiB hits), where req/s measures the client as much as the server.
# The ratio column is nginx's µs / Holdfast's µs: above 1, Holdfast serves more requests
# per CPU second than nginx.
#
# Only 127.0.0.1 is ever contacted. Every process started here is stopped on exit (trap),
# and every wrk run is bounded by BENCH_DURATION. The servers' logs and configs are kept in
# the work directory when BENCH_KEEP=1.
#
# Settings (environment):
#   BENCH_DURATION=10s   BENCH_RUNS=3   BENCH_WARMUP=2s   BENCH_CONNECTIONS=64
#   BENCH_STARTS=1       fresh starts of both servers per phase. Two instances of the same
#                        build differ by about 5 % on this kind of VM (docs/benchmarks.md,
#                        "disk-100k across fresh starts"), more than runs inside one start
#                        do; with N > 1 each phase is measured N times from a fresh start,
#                        the table gives the median of each column over the starts (errors
#                        summed, peak RSS the highest), and a line under it gives each
#                        start's Holdfast/nginx requests per CPU second.
#   BENCH_WRK_THREADS=1  BENCH_SERVER_CPU=0  BENCH_CLIENT_CPU=1
#   BENCH_PHASES="hit-1k hit-100k range-100k tls-1k tls-100k h2-1k h2-100k miss stale disk-100k"
#                        (also: hit-1k-purged)   BENCH_H2_STREAMS=1
#   BENCH_DISK_OBJECTS=2000   BENCH_DISK_MEMORY=32MiB (disk-100k: the working set, Holdfast's memory tier)   BENCH_PORT_BASE=28080 (uses 6 ports from it)
#   BENCH_HOLDFAST_MEMORY=4GiB   BENCH_HOLDFAST_LOG=warn (RUST_LOG; the tuned nginx has access_log off)
#   BENCH_OHA=1          install oha if missing (cargo install oha --locked); oha on PATH is used
#   BENCH_NGINX=tuned    nginx's configuration: tuned (keep-alive to the origin, HTTP/1.1,
#                        access_log off) or stock (a first configuration, as nginx's proxy
#                        module documentation shows it: `proxy_pass http://host:port` with
#                        no upstream block, so HTTP/1.0 and a new origin connection per
#                        miss, and the default access log). Only misses differ much; see
#                        docs/benchmarks.md.
#   BENCH_OUT=FILE       also write the table (markdown) to FILE
#   BENCH_TMP=DIR        work directory parent (default /dev/shm if writable, else /tmp)
#   BENCH_SKIP_BUILD=1   use target/release/holdfast as it is
set -euo pipefail

cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-10s}
RUNS=${BENCH_RUNS:-3}
STARTS=${BENCH_STARTS:-1}
WARMUP=${BENCH_WARMUP:-2s}
CONNS=${BENCH_CONNECTIONS:-64}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
PHASES=${BENCH_PHASES:-"hit-1k hit-100k range-100k tls-1k tls-100k h2-1k h2-100k miss stale disk-100k"}
H2_STREAMS=${BENCH_H2_STREAMS:-1}
# disk-100k: a working set of DISK_OBJECTS x 100 KiB, larger than Holdfast's memory tier.
DISK_OBJECTS=${BENCH_DISK_OBJECTS:-2000}
DISK_MEMORY=${BENCH_DISK_MEMORY:-32MiB}
PORT_BASE=${BENCH_PORT_BASE:-28080}
HF_MEMORY=${BENCH_HOLDFAST_MEMORY:-4GiB}
HF_LOG=${BENCH_HOLDFAST_LOG:-warn}
OHA=${BENCH_OHA:-0}
OUT=${BENCH_OUT:-}
NGINX_CONFIG=${BENCH_NGINX:-tuned}
KEEP=${BENCH_KEEP:-0}
case $STARTS in '' | *[!0-9]* | 0) echo "bench: BENCH_STARTS must be a whole number of starts, at least 1, not '$STARTS'" >&2; exit 2 ;; esac

ORIGIN_PORT=$PORT_BASE
HF_PORT=$((PORT_BASE + 1))
HF_ADMIN=$((PORT_BASE + 2))
NGX_PORT=$((PORT_BASE + 3))
HF_TLS_PORT=$((PORT_BASE + 4))
NGX_TLS_PORT=$((PORT_BASE + 5))
HOST=bench.local
# How the current phase reaches the caches: h1 (plain), tls (HTTP/1.1 over TLS), h2.
PROTO=h1
# The request header fields every request of the current phase carries.
REQ_HEADERS=(-H "Host: $HOST")
RANGE_HEADER="Range: bytes=0-65535"

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
case $NGINX_CONFIG in tuned | stock) ;; *) die "BENCH_NGINX is tuned or stock, not '$NGINX_CONFIG'" ;; esac

secs() { # 10s | 500ms | 2m -> seconds (may be fractional)
  case $1 in
    *ms) awk -v v="${1%ms}" 'BEGIN { print v / 1000 }' ;;
    *s) echo "${1%s}" ;;
    *m) echo $((${1%m} * 60)) ;;
    *) echo "$1" ;;
  esac
}

# ---------------------------------------------------------------- tools

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  log "installing $*"
  as_root apt-get update -qq
  # Keep the distribution's nginx service from starting on port 80 while it installs.
  local rc_policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e $rc_policy ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee $rc_policy >/dev/null
    as_root chmod +x $rc_policy
    created=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
    { [ $created -eq 1 ] && as_root rm -f $rc_policy; return 1; }
  [ $created -eq 1 ] && as_root rm -f $rc_policy
  return 0
}

NGINX=
find_nginx() {
  NGINX=$(command -v nginx || true)
  [ -n "$NGINX" ] || { [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx; } || true
}

install_tools() {
  command -v taskset >/dev/null || apt_install util-linux
  command -v pgrep >/dev/null || apt_install procps
  command -v curl >/dev/null || apt_install curl ca-certificates
  command -v wrk >/dev/null || apt_install wrk
  command -v openssl >/dev/null || apt_install openssl
  case " $PHASES " in *" h2-"*) command -v h2load >/dev/null || apt_install nghttp2-client ;; esac
  find_nginx
  if [ -z "$NGINX" ]; then
    apt_install nginx-light 2>/dev/null || apt_install nginx
    find_nginx
  fi
  [ -n "$NGINX" ] || die "nginx is not installed and could not be installed"
  if [ "$OHA" = 1 ] && ! command -v oha >/dev/null; then
    log "installing oha (cargo install oha --locked; takes a few minutes)"
    cargo install oha --locked
  fi
  local cpus
  cpus=$(nproc)
  if [ "$SERVER_CPU" -ge "$cpus" ] || [ "$CLIENT_CPU" -ge "$cpus" ]; then
    die "need CPUs $SERVER_CPU and $CLIENT_CPU, this machine has $cpus"
  fi
  [ "$SERVER_CPU" != "$CLIENT_CPU" ] || log "warning: server and client share CPU $SERVER_CPU"
}

# ---------------------------------------------------------------- processes

PIDS=()
WORK=
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget() { # forget a PID that has been stopped
  local keep=() pid
  for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

stop() { # stop PID with SIGTERM (SIGKILL after 10 s) and wait for it
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget "$pid"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # wait until 127.0.0.1:PORT accepts, while PID lives
  local port=$1 pid=$2
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# nginx's children are its worker, cache manager and (for its first minute) cache loader.
peak_rss_kib() { # VmHWM of PID and its children (nginx: master + worker + cache processes)
  local total=0 p kb
  for p in "$1" $(pgrep -P "$1" || true); do
    kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# ---------------------------------------------------------------- configs

write_files() {
  mkdir -p "$WORK/www/sie" "$WORK/nginx-cache" "$WORK/logs"
  head -c 1024 /dev/urandom >"$WORK/www/1k.bin"
  head -c 102400 /dev/urandom >"$WORK/www/100k.bin"
  head -c 1024 /dev/urandom >"$WORK/www/sie/1k.bin"
  head -c 102400 /dev/urandom >"$WORK/www/sie/100k.bin"
  chmod -R a+rX "$WORK"

  # One certificate for both caches: ECDSA P-256, as a CDN would serve.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" -subj "/CN=$HOST" \
    -addext "subjectAltName=DNS:$HOST" 2>/dev/null || die "openssl could not make a certificate"

  local user_line=""
  [ "$(id -u)" -ne 0 ] || user_line="user root root;"

  # The origin: plain files with explicit freshness; /miss/ serves 1k.bin for any query.
  cat >"$WORK/origin.conf" <<EOF
$user_line
daemon off;
worker_processes 1;
pid $WORK/origin.pid;
error_log $WORK/logs/origin.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    sendfile on;
    client_body_temp_path $WORK/tmp-origin-body;
    proxy_temp_path $WORK/tmp-origin-proxy;
    fastcgi_temp_path $WORK/tmp-origin-fcgi;
    uwsgi_temp_path $WORK/tmp-origin-uwsgi;
    scgi_temp_path $WORK/tmp-origin-scgi;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $WORK/www;
        location / { add_header Cache-Control "max-age=3600"; }
        location /sie/ { add_header Cache-Control "max-age=1, stale-if-error=3600"; }
        location /miss/ { alias $WORK/www/; add_header Cache-Control "max-age=3600"; }
    }
}
EOF

  # nginx proxy_cache: one worker, cache on the same filesystem as the work dir (tmpfs
  # when /dev/shm is used), keep-alive to the origin, request coalescing (proxy_cache_lock)
  # and stale-if-error like Holdfast's customer below. BENCH_NGINX=stock drops what a
  # first configuration lacks: the upstream block's keep-alive with HTTP/1.1, and
  # `access_log off`.
  local ngx_access="access_log off;" ngx_upstream="upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
    }" ngx_pass="proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";"
  if [ "$NGINX_CONFIG" = stock ]; then
    ngx_access="access_log $WORK/logs/nginx-access.log;"
    ngx_upstream=""
    ngx_pass="proxy_pass http://127.0.0.1:$ORIGIN_PORT;"
  fi
  cat >"$WORK/nginx.conf" <<EOF
$user_line
daemon off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/logs/nginx.err warn;
events { worker_connections 4096; }
http {
    $ngx_access
    keepalive_requests 1000000;
    sendfile on;
    client_body_temp_path $WORK/tmp-nginx-body;
    proxy_temp_path $WORK/tmp-nginx-proxy;
    fastcgi_temp_path $WORK/tmp-nginx-fcgi;
    uwsgi_temp_path $WORK/tmp-nginx-uwsgi;
    scgi_temp_path $WORK/tmp-nginx-scgi;
    proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=bench:256m max_size=$(secs_size "$HF_MEMORY") inactive=1h use_temp_path=off;
    $ngx_upstream
    server {
        listen 127.0.0.1:$NGX_PORT;
        listen 127.0.0.1:$NGX_TLS_PORT ssl http2;
        ssl_certificate $WORK/tls.crt;
        ssl_certificate_key $WORK/tls.key;
        location / {
            $ngx_pass
            proxy_connect_timeout 1s;
            proxy_read_timeout 5s;
            proxy_cache bench;
            proxy_cache_lock on;
            proxy_cache_use_stale error timeout http_500 http_502 http_503 http_504;
            add_header X-Cache-Status \$upstream_cache_status;
        }
    }
}
EOF

  cat >"$WORK/holdfast.yaml" <<EOF
# Generated by bench/run.sh.
server: { threads: 1 }
listen: ["127.0.0.1:$HF_PORT", { addr: "127.0.0.1:$HF_TLS_PORT", tls: true }]
# wrk and h2load connect to 127.0.0.1, which is no SNI: the default certificate answers.
tls: { default: { cert: tls.crt, key: tls.key } }
admin: { listen: "127.0.0.1:$HF_ADMIN" }
cache:
  memory: $HF_MEMORY
  max_object: 1MiB
shutdown_grace: 1s
customers:
  - name: bench
    hosts: ["$HOST"]
    tls: { cert: tls.crt, key: tls.key }
    origin:
      servers: ["127.0.0.1:$ORIGIN_PORT"]
      connect_timeout: 1s
      read_timeout: 5s
    cache:
      stale_if_error: 1h
EOF

  # The disk-100k phase: the same customer, with a memory tier smaller than the working
  # set and the disk tier on the filesystem nginx keeps its cache on.
  sed -e "s/^  memory: .*/  memory: $DISK_MEMORY/" \
    -e "s|^  max_object: 1MiB|  max_object: 1MiB\n  disk: { path: $WORK/holdfast-disk, size: 4GiB }|" \
    "$WORK/holdfast.yaml" >"$WORK/holdfast-disk.yaml"

  # wrk scripts: done() prints exact numbers; miss.lua makes every URL new.
  cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d status=%d socket=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
EOF
  cat "$WORK/report.lua" - >"$WORK/miss.lua" <<'EOF'
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  prefix = "/miss/1k.bin?u=" .. (args[1] or "0") .. "-" .. (tid or 0) .. "-"
  n = 0
end
function request()
  n = n + 1
  return wrk.format(nil, prefix .. n)
end
EOF
  # disk-walk.lua asks for each of the working set's objects in turn (to fill both
  # caches); disk.lua for one of them at random each time.
  cat "$WORK/report.lua" - >"$WORK/disk-walk.lua" <<EOF
local n = -1
function request()
  n = (n + 1) % $DISK_OBJECTS
  return wrk.format(nil, "/miss/100k.bin?o=" .. n)
end
EOF
  cat "$WORK/report.lua" - >"$WORK/disk.lua" <<EOF
function init(args) math.randomseed(#(args[1] or "") * 7919 + os.time()) end
function request()
  return wrk.format(nil, "/miss/100k.bin?o=" .. math.random(0, $DISK_OBJECTS - 1))
end
EOF
}

secs_size() { # 4GiB -> 4g for nginx max_size
  local v=$1
  case $v in
    *GiB) echo "${v%GiB}g" ;;
    *MiB) echo "${v%MiB}m" ;;
    *) echo "$v" ;;
  esac
}

# ---------------------------------------------------------------- servers

ORIGIN_PID=
start_origin() {
  [ -z "$ORIGIN_PID" ] || return 0
  taskset -c "$CLIENT_CPU" "$NGINX" -p "$WORK" -e "$WORK/logs/origin.err" -c "$WORK/origin.conf" \
    >>"$WORK/logs/origin.out" 2>&1 &
  ORIGIN_PID=$!
  PIDS+=("$ORIGIN_PID")
  wait_port "$ORIGIN_PORT" "$ORIGIN_PID" || die "origin nginx did not start: $(tail -5 "$WORK/logs/origin.err")"
}

stop_origin() {
  [ -n "$ORIGIN_PID" ] || return 0
  stop "$ORIGIN_PID"
  ORIGIN_PID=
  port_free "$ORIGIN_PORT" || die "origin still listening after stop"
}

# Both caches run during a phase, on the same core; only the one being driven is busy.
HF_PID=
NGX_PID=
HF_CONF=holdfast.yaml
start_server() { # holdfast | nginx
  case $1 in
    holdfast)
      RUST_LOG=$HF_LOG taskset -c "$SERVER_CPU" "$WORK/holdfast" -c "$WORK/$HF_CONF" \
        >>"$WORK/logs/holdfast.log" 2>&1 &
      HF_PID=$!
      PIDS+=("$HF_PID")
      if ! wait_port "$HF_PORT" "$HF_PID" || ! wait_port "$HF_ADMIN" "$HF_PID"; then
        die "holdfast did not start: $(tail -5 "$WORK/logs/holdfast.log")"
      fi
      ;;
    nginx)
      rm -rf "$WORK/nginx-cache" && mkdir -p "$WORK/nginx-cache"
      taskset -c "$SERVER_CPU" "$NGINX" -p "$WORK" -e "$WORK/logs/nginx.err" -c "$WORK/nginx.conf" \
        >>"$WORK/logs/nginx.out" 2>&1 &
      NGX_PID=$!
      PIDS+=("$NGX_PID")
      wait_port "$NGX_PORT" "$NGX_PID" || die "nginx did not start: $(tail -5 "$WORK/logs/nginx.err")"
      ;;
  esac
}

stop_servers() {
  [ -z "$HF_PID" ] || stop "$HF_PID"
  [ -z "$NGX_PID" ] || stop "$NGX_PID"
  HF_PID=
  NGX_PID=
}

server_pid() { if [ "$1" = holdfast ]; then echo "$HF_PID"; else echo "$NGX_PID"; fi; }
server_port() { if [ "$1" = holdfast ]; then echo "$HF_PORT"; else echo "$NGX_PORT"; fi; }
# The scheme, address and port the current phase (PROTO) drives SERVER at.
server_url() { # server
  if [ "$PROTO" = h1 ]; then
    echo "http://127.0.0.1:$(server_port "$1")"
  elif [ "$1" = holdfast ]; then
    echo "https://127.0.0.1:$HF_TLS_PORT"
  else
    echo "https://127.0.0.1:$NGX_TLS_PORT"
  fi
}
curl_proto() { # curl's options for PROTO
  case $PROTO in tls) echo "-k --http1.1" ;; h2) echo "-k --http2" ;; *) echo "" ;; esac
}

# The cache status of one request: Holdfast's Cache-Status or nginx's X-Cache-Status.
cache_status() { # server path
  # shellcheck disable=SC2046 # the options are words
  curl -s $(curl_proto) -o /dev/null -D - "${REQ_HEADERS[@]}" "$(server_url "$1")$2" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "cache-status" || tolower($1) == "x-cache-status" { print $2 }'
}

expect_status() { # server path pattern what
  local got
  got=$(cache_status "$1" "$2")
  [[ $got =~ $3 ]] || die "$1 $2: expected $4, got cache status '$got'"
}

# ---------------------------------------------------------------- load

cpu_ticks() { # user+system clock ticks of PID and its children (nginx: master + worker)
  local total=0 p t
  for p in "$1" $(pgrep -P "$1" || true); do
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

# One wrk run; prints "rps p50_ms p99_ms non2xx socket_errors client_cpu% requests".
wrk_run() { # server path duration [script [args...]]
  local server=$1 path=$2 dur=$3 script=${4:-$WORK/report.lua}
  shift 4 2>/dev/null || shift $#
  local limit out
  limit=$(awk -v d="$(secs "$dur")" 'BEGIN { printf "%d", d + 30 }')
  # `time` adds wrk's own CPU time (user, system): is the load generator the limit?
  out=$({
    TIMEFORMAT='WRKCPU %U %S'
    time timeout "$limit" taskset -c "$CLIENT_CPU" wrk -t"$WRK_THREADS" -c"$CONNS" -d"$dur" \
      --timeout 5s "${REQ_HEADERS[@]}" -s "$script" "$(server_url "$server")$path" -- "$@"
  } 2>&1) || die "wrk failed against $server$path: $out"
  echo "$out" | awk '
    /^WRKCPU / { cpu = $2 + $3 }
    /^BENCH / {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    }
    END {
      secs = v["duration_us"] / 1e6
      printf "%.0f %.3f %.3f %d %d %.0f %d\n", v["requests"] / secs,
        v["p50_us"] / 1000, v["p99_us"] / 1000, v["status"], v["socket"], 100 * cpu / secs,
        v["requests"]
    }'
}

# One oha run; prints "rps p50_ms p99_ms non2xx socket_errors - requests" (no client CPU;
# requests: the answers received, of any status).
oha_run() { # server path duration
  local server=$1 path=$2 dur=$3 limit json url
  url="http://127.0.0.1:$(server_port "$server")$path"
  limit=$(awk -v d="$(secs "$dur")" 'BEGIN { printf "%d", d + 30 }')
  # oha >= 1.5 takes --output-format json; older ones -j.
  json=$(timeout "$limit" taskset -c "$CLIENT_CPU" oha -z "$dur" -c "$CONNS" --no-tui \
    --output-format json "${REQ_HEADERS[@]}" "$url" 2>/dev/null) ||
    json=$(timeout "$limit" taskset -c "$CLIENT_CPU" oha -z "$dur" -c "$CONNS" --no-tui -j \
      "${REQ_HEADERS[@]}" "$url") ||
    die "oha failed against $server$path"
  # summary.requestsPerSec; latencyPercentiles.p50/p99 in seconds;
  # statusCodeDistribution {"200": n, ...}; errorDistribution {"message": n, ...}.
  echo "$json" | tr -d ' \n' | awk '
    # Sum the counts of an object {"key": n, ...}, skipping keys that match `skip`.
    function sum_values(obj, skip,   total, k, n) {
      total = 0
      while (match(obj, /"[^"]*":[0-9]+/)) {
        split(substr(obj, RSTART, RLENGTH), kv, "\":")
        k = substr(kv[1], 2); n = kv[2]
        if (k !~ skip) total += n
        obj = substr(obj, RSTART + RLENGTH)
      }
      return total
    }
    function number(obj, key) {
      if (!match(obj, "\"" key "\":[0-9.eE+-]+")) return 0
      return substr(obj, RSTART + length(key) + 3, RLENGTH - length(key) - 3) + 0
    }
    {
      rps = number($0, "requestsPerSec")
      match($0, /"latencyPercentiles":\{[^}]*\}/); lat = substr($0, RSTART, RLENGTH)
      p50 = number(lat, "p50"); p99 = number(lat, "p99")
      bad = 0; err = 0; answers = 0
      # Requests cut off at the end of the -z window are not errors.
      if (match($0, /"statusCodeDistribution":\{[^}]*\}/)) {
        codes = substr($0, RSTART + 25, RLENGTH - 25)
        bad = sum_values(codes, "^[23]"); answers = sum_values(codes, "^$")
      }
      if (match($0, /"errorDistribution":\{[^}]*\}/)) err = sum_values(substr($0, RSTART + 20, RLENGTH - 20), "deadline")
      printf "%.0f %.3f %.3f %d %d - %d\n", rps, p50 * 1000, p99 * 1000, bad, err, answers
    }'
}

# One h2load run over TLS and HTTP/2; prints "rps p50_ms p99_ms non2xx socket_errors
# client_cpu% requests". Latencies come from its per-request log (column 3, µs).
h2load_run() { # server path duration
  local server=$1 path=$2 dur=$3 limit out log=$WORK/h2load.log
  limit=$(awk -v d="$(secs "$dur")" 'BEGIN { printf "%d", d + 30 }')
  out=$({
    TIMEFORMAT='H2CPU %U %S'
    time timeout "$limit" taskset -c "$CLIENT_CPU" h2load -c "$CONNS" -m "$H2_STREAMS" \
      -D "$(secs "$dur")" --log-file="$log" -H ":authority: $HOST" "${REQ_HEADERS[@]:2}" \
      "$(server_url "$server")$path"
  } 2>&1) || die "h2load failed against $server$path: $out"
  local lat
  lat=$(awk '{ print $3 }' "$log" | sort -n | awk '{ a[NR] = $1 } END {
    if (!NR) { print "0 0"; exit }
    printf "%.3f %.3f", a[int(NR * 0.50 + 0.5)] / 1000, a[int(NR * 0.99 + 0.5)] / 1000 }')
  echo "$out" | awk -v lat="$lat" '
    /^H2CPU / { cpu = $2 + $3 }
    /^finished in/ { secs = $3 + 0; rps = $4 + 0 }
    /^requests:/ { done = $8; failed = $12; errored = $14; timeout = $16 }
    /^status codes:/ { bad = $5 + $7 + $9 }
    END {
      split(lat, l, " ")
      printf "%.0f %s %s %d %d %.0f %d\n", rps, l[1], l[2], bad, failed + errored + timeout - bad, (secs > 0 ? 100 * cpu / secs : 0), done
    }'
}

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR ? a[int((NR + 1) / 2)] : 0) }'; }

# One run against SERVER, bracketed by the server's CPU ticks and the wall clock; prints
# the driver's fields, then "server_ticks wall_seconds". It runs in a subshell, where
# `set -e` is off: failures are passed on by hand.
timed_run() { # driver server path [wrk script [arg]]
  local driver=$1 server=$2 path=$3 script=${4:-} arg=${5:-} pid c0 c1 t0 t1 r
  pid=$(server_pid "$server")
  c0=$(cpu_ticks "$pid") || exit 1
  t0=$(date +%s.%N)
  if [ "$driver" = oha_run ]; then
    r=$(oha_run "$server" "$path" "$DURATION") || exit 1
  elif [ "$driver" = h2load_run ]; then
    r=$(h2load_run "$server" "$path" "$DURATION") || exit 1
  elif [ -n "$script" ]; then
    r=$(wrk_run "$server" "$path" "$DURATION" "$script" "$arg") || exit 1
  else
    r=$(wrk_run "$server" "$path" "$DURATION") || exit 1
  fi
  t1=$(date +%s.%N)
  c1=$(cpu_ticks "$pid") || exit 1
  echo "$r $((c1 - c0)) $(awk -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.3f", t1 - t0 }')"
}

# One server's runs (lines of timed_run) in one line: the medians of req/s, p50 and p99;
# the sums of non-2xx/3xx answers and socket errors; the server's CPU use over its own
# runs in % of one core (its ticks in its runs / the wall time of its runs; 100 = the
# server had its core to itself and used all of it); the median CPU use of the load
# generator (wrk only) in % of one core; and the median over the runs of the server's
# CPU µs per request answered.
summarize() { # driver runs
  local driver=$1 runs=$2 col out=""
  for col in 1 2 3; do
    out+="$(printf '%s' "$runs" | awk -v c=$col 'NF { print $c }' | median) "
  done
  out+=$(printf '%s' "$runs" | awk -v hz="$CLK_TCK" '
    NF { bad += $4; sock += $5; ticks += $8; wall += $9 }
    END { printf "%d %d %.0f", bad, sock, (wall > 0 ? 100 * ticks / hz / wall : 0) }')
  if [ "$driver" = oha_run ]; then
    out+=" -"
  else
    out+=" $(printf '%s' "$runs" | awk 'NF { print $6 }' | median)"
  fi
  out+=" $(printf '%s' "$runs" | awk -v hz="$CLK_TCK" 'NF && $7 > 0 { printf "%.3f\n", $8 / hz / $7 * 1e6 }' | median)"
  echo "$out"
}

# RUNS runs of each server with DRIVER, alternating Holdfast and nginx; sets
# RESULT[driver/phase/server].
measure() { # driver phase path [wrk script]
  local driver=$1 phase=$2 path=$3 script=${4:-} i hf_runs="" ngx_runs="" server r
  for i in $(seq "$RUNS"); do
    hf_runs+="$(timed_run "$driver" holdfast "$path" "$script" "run$i")"$'\n'
    ngx_runs+="$(timed_run "$driver" nginx "$path" "$script" "run$i")"$'\n'
  done
  RESULT[${driver%_run}/$phase/holdfast]="$(summarize "$driver" "$hf_runs") $(peak_rss_kib "$HF_PID")"
  RESULT[${driver%_run}/$phase/nginx]="$(summarize "$driver" "$ngx_runs") $(peak_rss_kib "$NGX_PID")"
  for server in holdfast nginx; do
    r=${RESULT[${driver%_run}/$phase/$server]}
    log "$phase/$server (${driver%_run}): $(echo "$r" | awk '{ printf "%s req/s, p50 %s ms, p99 %s ms, %s non-2xx, %s socket errors, CPU %s%%, client CPU %s%%, %s CPU us/request", $1, $2, $3, $4, $5, $6, $7, $8 }')"
  done
}

declare -A RESULT # RESULT[driver/phase/server] = "rps p50 p99 non2xx sockerr cpu% client_cpu% cpu_us_per_request peak_rss_kib"
declare -A STARTED # STARTED[driver/phase/server/start]: RESULT of one fresh start (BENCH_STARTS > 1)
PER_START=""       # each start's Holdfast/nginx requests per CPU second, for the report

# Keep the results of PHASE's fresh start number N.
keep_start() { # phase n
  local key
  for key in "${!RESULT[@]}"; do
    case $key in */"$1"/*) STARTED[$key/$2]=${RESULT[$key]} ;; esac
  done
}

# RESULT for PHASE from its STARTS fresh starts: each field's median over the starts
# (a field that is not a number, as oha's client CPU, is taken from the first start),
# errors summed, peak RSS the highest; and each start's per-CPU-second ratio in PER_START.
combine_starts() { # phase
  local phase=$1 key driver i s field values combined ratios h n
  for key in "${!RESULT[@]}"; do
    case $key in */"$phase"/*) ;; *) continue ;; esac
    combined=""
    for i in 1 2 3 4 5 6 7 8 9; do
      values=$(for s in $(seq "$STARTS"); do echo "${STARTED[$key/$s]}" | awk -v i=$i '{ print $i }'; done)
      case $i in
        4 | 5) field=$(echo "$values" | awk '{ t += $1 } END { print t + 0 }') ;;
        9) field=$(echo "$values" | sort -g | tail -1) ;;
        *) if echo "$values" | grep -qv '^[0-9.]*$'; then
             field=$(echo "$values" | head -1)
           else
             field=$(echo "$values" | median)
           fi ;;
      esac
      combined+="$field "
    done
    RESULT[$key]=${combined% }
  done
  for driver in wrk oha h2load; do
    [ -n "${RESULT[$driver/$phase/holdfast]:-}" ] || continue
    ratios=""
    for s in $(seq "$STARTS"); do
      h=$(echo "${STARTED[$driver/$phase/holdfast/$s]}" | awk '{ print $8 }')
      n=$(echo "${STARTED[$driver/$phase/nginx/$s]}" | awk '{ print $8 }')
      ratios+=" $(awk -v h="$h" -v n="$n" 'BEGIN { printf "%.2f", (h > 0 ? n / h : 0) }')"
    done
    PER_START+="- $phase ($driver):$ratios (median $(echo "${ratios# }" | tr ' ' '\n' | median))"$'\n'
  done
}
HF_OBJECTS=0 HF_BYTES=0 HF_EVICTIONS=0 HF_NEW_OBJECTS=0 HF_RSS_GROWTH_KIB=0

metric() { # name: value from Holdfast's admin /metrics
  curl -s "http://127.0.0.1:$HF_ADMIN/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}

run_phase() { # phase
  local phase=$1 path script="" server got rss0=0 objects0=0
  local -A hit=([holdfast]='(^|; )hit' [nginx]='^HIT$') stale=([holdfast]='fwd=stale' [nginx]='^STALE$')
  start_origin
  HF_CONF=holdfast.yaml
  [ "$phase" != disk-100k ] || HF_CONF=holdfast-disk.yaml
  rm -rf "$WORK/holdfast-disk"
  start_server holdfast
  start_server nginx
  case $phase in
    hit-1k | hit-100k | tls-1k | tls-100k | h2-1k | h2-100k)
      path=/${phase#*-}.bin
      case $phase in tls-*) PROTO=tls ;; h2-*) PROTO=h2 ;; esac
      for server in holdfast nginx; do
        cache_status "$server" "$path" >/dev/null
        expect_status "$server" "$path" "${hit[$server]}" "a hit"
      done
      ;;
    hit-1k-purged)
      # hit-1k with 1,000 purge markers in force on Holdfast that do not match: 500 path
      # prefixes of 1 to 50 characters and 500 tags. nginx runs as in hit-1k, as a control.
      path=/1k.bin
      for server in holdfast nginx; do
        cache_status "$server" "$path" >/dev/null
      done
      local i prefixes="" tags=""
      for i in $(seq 500); do
        prefixes+="\"/$(printf 'z%.0s' $(seq $((i % 50))))$i/\","
        tags+="\"tag-$i\","
      done
      curl -sf -X POST "http://127.0.0.1:$HF_ADMIN/purge" \
        -d "{\"customer\": \"bench\", \"prefixes\": [${prefixes%,}], \"tags\": [${tags%,}]}" >/dev/null ||
        die "the purge markers were refused"
      [ "$(metric holdfast_purge_markers)" = 1000 ] || die "expected 1000 purge markers, got $(metric holdfast_purge_markers)"
      for server in holdfast nginx; do
        expect_status "$server" "$path" "${hit[$server]}" "a hit"
      done
      ;;
    range-100k)
      path=/100k.bin
      for server in holdfast nginx; do
        cache_status "$server" "$path" >/dev/null
      done
      REQ_HEADERS+=(-H "$RANGE_HEADER")
      for server in holdfast nginx; do
        expect_status "$server" "$path" "${hit[$server]}" "a hit"
        got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "${REQ_HEADERS[@]}" \
          "http://127.0.0.1:$(server_port "$server")$path")
        [ "$got" = "206 65536" ] || die "$server $path: expected a 206 of 65536 bytes, got $got"
      done
      ;;
    miss)
      path=/miss/1k.bin
      script=$WORK/miss.lua
      ;;
    disk-100k)
      path=/miss/100k.bin
      script=$WORK/disk.lua
      for server in holdfast nginx; do
        log "$phase/$server: filling with $DISK_OBJECTS objects of 100 KiB"
        wrk_run "$server" "$path" "$WARMUP" "$WORK/disk-walk.lua" >/dev/null
        expect_status "$server" "$path?o=$((DISK_OBJECTS - 1))" "${hit[$server]}" "a hit"
        expect_status "$server" "$path?o=0" "${hit[$server]}" "a hit"
      done
      [ "$(metric holdfast_disk_objects)" -ge "$DISK_OBJECTS" ] ||
        die "holdfast's disk tier holds $(metric holdfast_disk_objects) objects, not $DISK_OBJECTS: warm longer (BENCH_WARMUP)"
      DISK_HITS0=$(metric holdfast_disk_hits_total)
      DISK_REQS0=$(metric holdfast_requests_total)
      ;;
    stale)
      # Stored by these requests; with max-age=1 the next may already be a revalidation.
      path=/sie/1k.bin
      for server in holdfast nginx; do cache_status "$server" "$path" >/dev/null; done
      stop_origin
      sleep 2 # past max-age=1
      for server in holdfast nginx; do
        expect_status "$server" "$path" "${stale[$server]}" "a stale-if-error answer"
      done
      ;;
  esac
  for server in holdfast nginx; do
    log "$phase/$server: warming for $WARMUP"
    if [ "$PROTO" = h2 ]; then
      h2load_run "$server" "$path" "$WARMUP" >/dev/null
    elif [ -n "$script" ]; then
      wrk_run "$server" "$path" "$WARMUP" "$script" warm >/dev/null
    else
      wrk_run "$server" "$path" "$WARMUP" >/dev/null
    fi
  done
  if [ "$phase" = miss ]; then
    # After warming: connections, buffers and allocator arenas exist; what grows from
    # here on is the store. nginx's runs in between send nothing to Holdfast, so the
    # growth from here to the end is that of Holdfast's own runs.
    rss0=$(rss_kib "$HF_PID")
    objects0=$(metric holdfast_cache_objects)
  fi
  log "$phase: measuring $RUNS x $DURATION per server at $CONNS connections, alternating"
  if [ "$PROTO" = h2 ]; then
    measure h2load_run "$phase" "$path"
  else
    measure wrk_run "$phase" "$path" "$script"
  fi
  if [ "$phase" = disk-100k ]; then
    DISK_SHARE=$(awk -v h="$(($(metric holdfast_disk_hits_total) - DISK_HITS0))" \
      -v r="$(($(metric holdfast_requests_total) - DISK_REQS0))" 'BEGIN { printf "%.0f", r ? 100 * h / r : 0 }')
    DISK_BYTES_PER_OBJECT=$(($(du -sb "$WORK/holdfast-disk/objects" | cut -f1) / $(metric holdfast_disk_objects)))
  fi
  if [ "$phase" = miss ]; then
    HF_OBJECTS=$(metric holdfast_cache_objects)
    HF_BYTES=$(metric holdfast_cache_bytes)
    HF_EVICTIONS=$(metric holdfast_cache_evictions_total)
    HF_NEW_OBJECTS=$((HF_OBJECTS - objects0))
    HF_RSS_GROWTH_KIB=$(($(rss_kib "$HF_PID") - rss0))
  fi
  if [ "$OHA" = 1 ] || command -v oha >/dev/null; then
    if [ "$phase" != miss ] && [ "$phase" != disk-100k ] && [ "$PROTO" != h2 ]; then
      log "$phase: oha $RUNS x $DURATION per server, alternating"
      measure oha_run "$phase" "$path"
    fi
  fi
  stop_servers
  start_origin
  REQ_HEADERS=(-H "Host: $HOST")
  PROTO=h1
}

# ---------------------------------------------------------------- report

table() { # driver: wrk | oha
  local driver=$1 phase h n
  printf '\n%s, %s connections, median of %s x %s per server, runs alternating Holdfast and nginx; server on CPU %s, %s (and the origin) on CPU %s\n\n' \
    "$driver" "$CONNS" "$RUNS" "$DURATION" "$SERVER_CPU" "$driver" "$CLIENT_CPU"
  printf '| phase | Holdfast req/s | p50 ms | p99 ms | errors | CPU %% | CPU µs/req | peak RSS MiB | nginx req/s | p50 ms | p99 ms | errors | CPU %% | CPU µs/req | peak RSS MiB | Holdfast/nginx req/s | Holdfast/nginx req per CPU s | %s CPU %% (H/n) |\n' "$driver"
  printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
  for phase in $PHASES; do
    h=${RESULT[$driver/$phase/holdfast]:-}
    n=${RESULT[$driver/$phase/nginx]:-}
    if [ -z "$h" ] || [ -z "$n" ]; then continue; fi
    # fields: 1 phase; Holdfast 2 rps 3 p50 4 p99 5 non2xx 6 sock 7 cpu 8 client 9 µs/req
    # 10 rss; nginx 11 rps 12 p50 13 p99 14 non2xx 15 sock 16 cpu 17 client 18 µs/req 19 rss
    echo "$phase $h $n" | awk '{
      printf "| %s | %d | %.2f | %.2f | %d | %d | %.1f | %.1f | %d | %.2f | %.2f | %d | %d | %.1f | %.1f | %.2f | %.2f | %s / %s |\n",
        $1, $2, $3, $4, $5 + $6, $7, $9, $10 / 1024, $11, $12, $13, $14 + $15, $16, $18, $19 / 1024,
        ($11 > 0 ? $2 / $11 : 0), ($9 > 0 ? $18 / $9 : 0), $8, $17
    }'
  done
  cat <<'EOF'

errors: non-2xx/3xx answers plus socket errors, summed over the runs. CPU %: CPU time per
wall second over that server's own runs (100 = one full core), of the server and of the
load generator (wrk only). CPU µs/req: the server's CPU time (user + system; nginx: all its
processes) during a run / the requests answered in it, median over the runs: what a request
costs the server on its core, even when the load generator is the limit. Holdfast/nginx req
per CPU s: nginx's µs/req / Holdfast's (above 1: Holdfast does more per core). Peak RSS:
VmHWM when the runs end; for nginx summed over its processes.
EOF
}

report() {
  {
    printf '## Holdfast vs nginx proxy_cache\n\n'
    printf -- '- holdfast built from: %s\n' "$BUILT_FROM"
    printf -- '- machine: %s CPUs, %s, %s memory\n' "$(nproc)" \
      "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" \
      "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    printf -- '- nginx: %s (BENCH_NGINX=%s); wrk: %s%s\n' "$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')" "$NGINX_CONFIG" \
      "$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }')" \
      "$(command -v oha >/dev/null && printf '; %s' "$(oha --version)")"
    printf -- '- load average before: %s; after: %s\n' "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)"
    table wrk
    if printf '%s\n' "${!RESULT[@]}" | grep -q '^oha/'; then table oha; fi
    if printf '%s\n' "${!RESULT[@]}" | grep -q '^h2load/'; then table h2load; fi
    if [ -n "$PER_START" ]; then
      printf '\nThe tables give the median over %s fresh starts of both servers (BENCH_STARTS). Holdfast/nginx req per CPU s in each start:\n\n%s' \
        "$STARTS" "$PER_START"
    fi
    if [ -n "${DISK_SHARE:-}" ]; then
      printf '\ndisk-100k: %s objects of 100 KiB chosen at random; Holdfast with %s of memory in front of its disk tier, nginx with its cache, both on %s. ' \
        "$DISK_OBJECTS" "$DISK_MEMORY" "$(df --output=fstype "$WORK" | tail -1)"
      printf '%s%% of Holdfast'"'"'s answers were read from its disk tier (holdfast_disk_hits_total / holdfast_requests_total); ' "$DISK_SHARE"
      printf 'bytes on disk per object (du of the objects directory / holdfast_disk_objects): %s.\n' "$DISK_BYTES_PER_OBJECT"
    fi
    if [ "${HF_NEW_OBJECTS:-0}" -gt 0 ]; then
      printf '\nHoldfast memory per cached object (miss phase, 1 KiB bodies): %s objects stored, ' "$HF_OBJECTS"
      printf '%s evictions; holdfast_cache_bytes / holdfast_cache_objects = %s bytes/object; ' \
        "$HF_EVICTIONS" "$((HF_BYTES / HF_OBJECTS))"
      printf 'RSS growth over the measured runs / objects added = %s KiB / %s = %s bytes/object.\n' \
        "$HF_RSS_GROWTH_KIB" "$HF_NEW_OBJECTS" "$((HF_RSS_GROWTH_KIB * 1024 / HF_NEW_OBJECTS))"
    fi
  } | tee ${OUT:+"$OUT"}
}

# ---------------------------------------------------------------- main

install_tools
for p in "$ORIGIN_PORT" "$HF_PORT" "$HF_ADMIN" "$NGX_PORT" "$HF_TLS_PORT" "$NGX_TLS_PORT"; do
  port_free "$p" || die "port $p is in use; set BENCH_PORT_BASE"
done

tmp_parent=${BENCH_TMP:-}
if [ -z "$tmp_parent" ]; then
  if [ -w /dev/shm ]; then tmp_parent=/dev/shm; else tmp_parent=${TMPDIR:-/tmp}; fi
fi
WORK=$(mktemp -d "$tmp_parent/holdfast-bench.XXXXXX")

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building: cargo build --release --locked"
  cargo build --release --locked
fi
# A private copy: a rebuild in the tree during the run cannot swap the binary under it.
cp target/release/holdfast "$WORK/holdfast"
BUILT_FROM="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null ||
  BUILT_FROM+=" with uncommitted changes in src/"

write_files
"$WORK/holdfast" -t -c "$WORK/holdfast.yaml" >/dev/null || die "bench config rejected"
"$NGINX" -t -q -p "$WORK" -e "$WORK/logs/nginx.err" -c "$WORK/nginx.conf" || die "nginx config rejected"

CLK_TCK=$(getconf CLK_TCK)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for phase in $PHASES; do
  case $phase in hit-1k | hit-1k-purged | hit-100k | range-100k | tls-1k | tls-100k | h2-1k | h2-100k | miss | stale | disk-100k) ;; *) die "unknown phase $phase" ;; esac
  for start in $(seq "$STARTS"); do
    [ "$STARTS" = 1 ] || log "$phase: fresh start $start of $STARTS"
    run_phase "$phase"
    [ "$STARTS" = 1 ] || keep_start "$phase" "$start"
  done
  [ "$STARTS" = 1 ] || combine_starts "$phase"
done
stop_origin
report
